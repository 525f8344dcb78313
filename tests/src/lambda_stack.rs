//! The AWS deployment on one machine: the real Lambda binaries (`vacal-api`,
//! `vacal-worker`, `vacal-janitor`) under `cargo lambda watch`, against the AWS emulator
//! named by `AWS_ENDPOINT_URL`. Watch serves the API's function URL; nothing under it plays
//! the parts AWS plays around the functions, so this module does:
//!
//! - [`EventSource`] is the SQS event source mapping, one step at a time: receive from a
//!   band's queue, invoke the worker with the messages as an SQS event, delete those the
//!   worker did not list in `batchItemFailures` (failures stay in flight until the
//!   visibility timeout, and after `maxReceiveCount` deliveries SQS moves them to the DLQ).
//! - [`LambdaStack`] provisions the resources, starts watch and runs that mapping and the
//!   janitor's schedule in the background, so jobs run as they do on AWS. The
//!   `lambda-stack` binary and the tests use it.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use serde_json::{json, Value};
use vacal_aws::provision::{create_all, require_loopback_endpoint};
use vacal_aws::{AwsEnv, Band, Clients};

/// The functions' name as watch knows them (their bin names).
pub const API: &str = "vacal-api";
pub const WORKER: &str = "vacal-worker";
pub const JANITOR: &str = "vacal-janitor";

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The event EventBridge sends on a schedule (the janitor ignores its content).
pub fn scheduled_event() -> Value {
    json!({
        "version": "0", "id": "vacal-lambda-stack", "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "000000000000", "time": "2024-01-15T14:25:00Z",
        "region": "us-east-1", "resources": [], "detail": {}
    })
}

/// How watch runs the functions.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Instances of each function that may run at once (watch's `--concurrency`).
    pub concurrency: usize,
    /// Cargo profile the functions are built with (watch's `--profile`); `None` is dev.
    pub profile: Option<String>,
    /// Extra variables for the functions (the service's own, such as `CACHE_TTL`).
    pub env: Vec<(String, String)>,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            concurrency: 2,
            profile: None,
            env: Vec::new(),
        }
    }
}

/// `cargo lambda watch` in its own process group; stopped when dropped.
pub struct Watch {
    child: Mutex<Child>,
    port: u16,
    base: String,
    output: Arc<Mutex<Vec<String>>>,
}

/// Lines of watch's output kept for diagnostics.
const OUTPUT_LINES: usize = 2000;

impl Watch {
    /// Starts watch (see [`Watch::spawn`]) and waits until its control plane listens.
    pub fn start(env: &AwsEnv, options: &WatchOptions) -> Result<Watch, String> {
        let watch = Watch::spawn(env, options)?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while !watch.listening()? {
            if Instant::now() > deadline {
                return Err(format!(
                    "cargo lambda watch did not listen on {}: {}",
                    watch.base,
                    watch.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(watch)
    }

    /// Starts watch on a free loopback port with the deployment's environment contract;
    /// returns at once (the control plane listens shortly after; the functions compile on
    /// first use).
    pub fn spawn(env: &AwsEnv, options: &WatchOptions) -> Result<Watch, String> {
        let port = free_port();
        let mut vars: Vec<(String, String)> = [
            ("JOBS_TABLE", env.jobs_table.as_str()),
            ("RESULTS_BUCKET", env.results_bucket.as_str()),
            ("QUEUE_URL_HIGH", env.queues.high.as_str()),
            ("QUEUE_URL_NORMAL", env.queues.normal.as_str()),
            ("QUEUE_URL_LOW", env.queues.low.as_str()),
            ("DLQ_URL_HIGH", env.dead_letter_queues.high.as_str()),
            ("DLQ_URL_NORMAL", env.dead_letter_queues.normal.as_str()),
            ("DLQ_URL_LOW", env.dead_letter_queues.low.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        // The functions use the SDK's default chain, which needs a region and credentials;
        // an emulator accepts any (the same defaults as `Clients::for_emulator`).
        for (k, v) in [
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ] {
            if std::env::var(k).is_err() {
                vars.push((k.to_string(), v.to_string()));
            }
        }
        vars.extend(options.env.iter().cloned());
        let mut command = Command::new(env!("CARGO"));
        command
            .args(["lambda", "watch", "--ignore-changes", "--quiet"])
            .args(["--invoke-address", "127.0.0.1", "--invoke-port"])
            .arg(port.to_string())
            .arg("--concurrency")
            .arg(options.concurrency.max(1).to_string());
        if let Some(profile) = &options.profile {
            command.args(["--profile", profile]);
        }
        command
            .current_dir(workspace_root())
            .envs(vars)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or("info".into()),
            )
            // As the template's LoggingConfig makes Lambda set it.
            .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command.spawn().map_err(|e| {
            format!(
                "cannot run `cargo lambda watch` ({e}); install it with \
                 `bash tests/aws/emulator.sh ...`, which puts cargo-lambda from .venv on PATH"
            )
        })?;
        let output = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().expect("piped")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("piped")),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut lines = output.lock().unwrap();
                    if lines.len() == OUTPUT_LINES {
                        lines.remove(0);
                    }
                    lines.push(line);
                }
            });
        }
        Ok(Watch {
            child: Mutex::new(child),
            port,
            base: format!("http://127.0.0.1:{port}"),
            output,
        })
    }

    /// Whether the control plane accepts connections; an error once watch has exited.
    pub fn listening(&self) -> Result<bool, String> {
        if let Ok(Some(status)) = self.child.lock().unwrap().try_wait() {
            return Err(format!(
                "cargo lambda watch exited ({status}): {}",
                self.log_tail()
            ));
        }
        Ok(std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok())
    }

    /// Watch's control plane, e.g. `http://127.0.0.1:9000`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The API's function URL: the base URL of the HTTP API (`.../lambda-url/vacal-api`).
    pub fn api_url(&self) -> String {
        format!("{}/lambda-url/{API}", self.base)
    }

    /// The last lines watch and the functions printed.
    pub fn log_tail(&self) -> String {
        let lines = self.output.lock().unwrap();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Every line kept of watch's output that contains `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        let lines = self.output.lock().unwrap();
        lines
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// Sends an HTTP request to the API through its function URL; the body as JSON.
    pub fn api(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.api_url());
        let mut builder = ureq::http::Request::builder().method(method).uri(&url);
        if body.is_some() {
            builder = builder.header("content-type", "application/json");
        }
        let request = builder
            .body(body.map(|b| b.to_string()).unwrap_or_default())
            .expect("request builds");
        let (status, text) = send(request).unwrap_or_else(|e| panic!("{e}\n{}", self.log_tail()));
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{method} {path}: {status} {text}\n{}", self.log_tail()));
        (status, json)
    }

    /// Invokes a function as the Lambda service does, with `payload` as its event.
    pub fn invoke(&self, function: &str, payload: &Value) -> Result<Value, String> {
        let url = format!("{}/2015-03-31/functions/{function}/invocations", self.base);
        let request = ureq::http::Request::builder()
            .method("POST")
            .uri(&url)
            .header("content-type", "application/json")
            .body(payload.to_string())
            .expect("request builds");
        let (status, text) = send(request)?;
        if status != 200 {
            return Err(format!("invoking {function}: {status} {text}"));
        }
        serde_json::from_str(&text).map_err(|_| format!("{function} answered {text}"))
    }

    /// Stops watch: SIGTERM lets it stop the function processes it started (each in a
    /// process group of its own); SIGKILL only if it does not exit within 10 s.
    pub fn stop(&self) {
        let mut child = self.child.lock().unwrap();
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One request with no status treated as an error; the status and the body's text.
fn send<B: ureq::AsSendBody>(request: ureq::http::Request<B>) -> Result<(u16, String), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        // The first call to each function compiles it; a worker invocation runs its jobs.
        .timeout_global(Some(Duration::from_secs(900)))
        .build()
        .into();
    let uri = request.uri().to_string();
    let response = agent.run(request).map_err(|e| format!("{uri}: {e}"))?;
    let status = response.status().as_u16();
    Ok((
        status,
        response.into_body().read_to_string().unwrap_or_default(),
    ))
}

/// How long a step that needs a queue message polls for it.
pub const RECEIVE_DEADLINE: Duration = Duration::from_secs(10);

/// Calls `receive` (given how many messages arrived so far) until `want` have arrived in all
/// or [`RECEIVE_DEADLINE`] has passed, and returns what arrived. A short poll may answer
/// empty while messages are visible (SQS samples its servers; an emulator may see an
/// expired visibility late), so a step that needs a message waits for it.
async fn poll_for<T, F, Fut>(want: usize, mut receive: F) -> Result<Vec<T>, String>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<T>, String>>,
{
    let deadline = Instant::now() + RECEIVE_DEADLINE;
    let mut got = Vec::new();
    loop {
        got.extend(receive(got.len()).await?);
        if got.len() >= want || Instant::now() > deadline {
            return Ok(got);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The SQS event source mapping of the worker, step by step.
#[derive(Clone)]
pub struct EventSource {
    pub clients: Clients,
    pub env: AwsEnv,
}

impl EventSource {
    /// Up to `max` (at most 10) messages now visible in one band's queue, hidden for
    /// `visibility` seconds, or for the queue's own visibility timeout when `None` (what
    /// the event source mapping does).
    pub async fn receive(
        &self,
        band: Band,
        max: i32,
        visibility: Option<i32>,
    ) -> Result<Vec<Message>, String> {
        self.clients
            .sqs
            .receive_message()
            .queue_url(self.env.queues.of(band))
            .max_number_of_messages(max.clamp(1, 10))
            .set_visibility_timeout(visibility)
            .wait_time_seconds(0)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .map(|out| out.messages.unwrap_or_default())
            .map_err(|e| format!("ReceiveMessage: {e:?}"))
    }

    /// Like [`receive`](Self::receive), but polled until `want` messages have arrived (see
    /// [`poll_for`]).
    pub async fn receive_at_least(
        &self,
        band: Band,
        want: usize,
        visibility: Option<i32>,
    ) -> Result<Vec<Message>, String> {
        poll_for(want, |so_far| {
            self.receive(band, 10 - so_far as i32, visibility)
        })
        .await
    }

    /// [`receive_all`](Self::receive_all), polled until `want` messages have arrived (see
    /// [`poll_for`]).
    pub async fn receive_all_at_least(
        &self,
        want: usize,
        visibility: Option<i32>,
    ) -> Result<Vec<(Band, Message)>, String> {
        poll_for(want, |_| self.receive_all(visibility)).await
    }

    /// Every band's visible messages (band, message), high band first.
    pub async fn receive_all(
        &self,
        visibility: Option<i32>,
    ) -> Result<Vec<(Band, Message)>, String> {
        let mut all = Vec::new();
        for band in Band::ALL {
            for m in self.receive(band, 10, visibility).await? {
                all.push((band, m));
            }
        }
        Ok(all)
    }

    /// The SQS event Lambda builds from one band's messages.
    pub fn event(&self, band: Band, messages: &[&Message]) -> Value {
        let queue = self
            .env
            .queues
            .of(band)
            .rsplit('/')
            .next()
            .unwrap_or_default();
        let records: Vec<Value> = messages
            .iter()
            .map(|m| {
                let attributes: serde_json::Map<String, Value> = m
                    .attributes()
                    .map(|a| {
                        a.iter()
                            .map(|(k, v)| (k.as_str().to_string(), json!(v)))
                            .collect()
                    })
                    .unwrap_or_default();
                json!({
                    "messageId": m.message_id(),
                    "receiptHandle": m.receipt_handle(),
                    "body": m.body(),
                    "attributes": attributes,
                    "messageAttributes": {},
                    "md5OfBody": m.md5_of_body(),
                    "eventSource": "aws:sqs",
                    "eventSourceARN": format!("arn:aws:sqs:us-east-1:000000000000:{queue}"),
                    "awsRegion": "us-east-1"
                })
            })
            .collect();
        json!({ "Records": records })
    }

    /// Invokes the worker with one band's messages and settles them as Lambda does:
    /// deletes every message the worker did not report as failed. Returns the message IDs
    /// it reported. When the invocation itself fails, nothing is deleted (every message
    /// comes back after its visibility timeout), as on AWS.
    pub async fn deliver(
        &self,
        watch: &Arc<Watch>,
        band: Band,
        messages: &[&Message],
    ) -> Result<Vec<String>, String> {
        let event = self.event(band, messages);
        let invoker = watch.clone();
        let response = tokio::task::spawn_blocking(move || invoker.invoke(WORKER, &event))
            .await
            .map_err(|e| format!("invoking the worker: {e}"))??;
        let failed: Vec<String> = response["batchItemFailures"]
            .as_array()
            .ok_or_else(|| format!("not an SqsBatchResponse: {response}"))?
            .iter()
            .map(|f| f["itemIdentifier"].as_str().unwrap_or_default().to_string())
            .collect();
        for m in messages {
            if !failed.iter().any(|f| Some(f.as_str()) == m.message_id()) {
                self.clients
                    .sqs
                    .delete_message()
                    .queue_url(self.env.queues.of(band))
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .map_err(|e| format!("DeleteMessage: {e:?}"))?;
            }
        }
        Ok(failed)
    }

    /// Receives and delivers one message at a time until no message is left (bounded);
    /// returns the job IDs run. Every delivery must succeed.
    pub async fn run_until_idle(&self, watch: &Arc<Watch>) -> Vec<String> {
        let mut ran = Vec::new();
        for _ in 0..20 {
            let got = self.receive_all(Some(60)).await.expect("ReceiveMessage");
            if got.is_empty() {
                return ran;
            }
            for (band, m) in &got {
                ran.push(job_of(m));
                let failed = self.deliver(watch, *band, &[m]).await.expect("delivery");
                assert!(failed.is_empty(), "worker failed {failed:?}");
            }
        }
        panic!("the queues never drained; ran {ran:?}");
    }
}

/// The job a message names ("" when it names none).
pub fn job_of(m: &Message) -> String {
    let body: Value = serde_json::from_str(m.body().unwrap_or("{}")).unwrap_or(Value::Null);
    body["job_id"].as_str().unwrap_or_default().to_string()
}

/// How the stack runs.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Prefix of the table, queues and bucket (unique per stack).
    pub prefix: String,
    /// The queues' visibility timeout: how long a delivery whose invocation failed stays
    /// hidden before SQS delivers it again. It must exceed a worker invocation, else a
    /// message comes back while its job still runs (the worker then finds the job leased
    /// and requeues it, which is harmless but wasteful).
    pub visibility_secs: u32,
    /// Messages per worker invocation (Lambda's batch size, at most 10).
    pub batch_size: i32,
    /// Janitor runs: one every this often.
    pub janitor_every: Duration,
    /// How long the event source waits after finding every queue empty.
    pub idle_poll: Duration,
    pub watch: WatchOptions,
}

impl StackOptions {
    pub fn new(prefix: &str) -> StackOptions {
        StackOptions {
            prefix: prefix.to_string(),
            visibility_secs: 120,
            batch_size: 10,
            janitor_every: Duration::from_secs(5),
            idle_poll: Duration::from_millis(200),
            watch: WatchOptions::default(),
        }
    }
}

/// The resources, watch, the worker's event source mapping and the janitor's schedule.
/// Dropping it stops the background tasks and watch.
pub struct LambdaStack {
    pub env: AwsEnv,
    pub clients: Clients,
    pub watch: Arc<Watch>,
    options: StackOptions,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl LambdaStack {
    /// [`LambdaStack::launch`], then [`LambdaStack::ready`].
    pub async fn start(options: StackOptions) -> Result<LambdaStack, String> {
        let mut stack = LambdaStack::launch(options).await?;
        stack.ready().await?;
        Ok(stack)
    }

    /// Refuses a non-loopback endpoint, provisions the resources and starts watch; returns
    /// without waiting for it, so the caller can [`stop`](LambdaStack::stop) a slow start.
    pub async fn launch(options: StackOptions) -> Result<LambdaStack, String> {
        require_loopback_endpoint()?;
        let clients = Clients::for_emulator().await;
        let env = create_all(&clients, &options.prefix, options.visibility_secs)
            .await
            .map_err(|e| format!("cannot create the resources: {e:?}"))?;
        let watch = Arc::new(Watch::spawn(&env, &options.watch)?);
        Ok(LambdaStack {
            env,
            clients,
            watch,
            options,
            stop: Arc::new(AtomicBool::new(false)),
            tasks: Vec::new(),
        })
    }

    /// Waits for watch, compiles (on first use) and initialises the three functions (one
    /// API call, an empty worker event, a janitor run), then starts the event source
    /// mapping and the janitor's schedule. When it returns, the API answers.
    pub async fn ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !self.watch.listening()? {
            if Instant::now() > deadline {
                return Err(format!(
                    "cargo lambda watch did not listen at {}: {}",
                    self.watch.base(),
                    self.watch.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let warm = self.watch.clone();
        tokio::task::spawn_blocking(move || warm_up(&warm))
            .await
            .map_err(|e| e.to_string())??;
        let source = EventSource {
            clients: self.clients.clone(),
            env: self.env.clone(),
        };
        self.tasks = vec![
            tokio::spawn(pump(
                source,
                self.watch.clone(),
                self.options.clone(),
                self.stop.clone(),
            )),
            tokio::spawn(janitor_schedule(
                self.watch.clone(),
                self.options.janitor_every,
                self.stop.clone(),
            )),
        ];
        Ok(())
    }

    /// The API's base URL (its function URL under watch).
    pub fn api_url(&self) -> String {
        self.watch.api_url()
    }

    /// Stops the background tasks and watch. Invocations in flight get 10 s to settle
    /// their messages; one still running after that is cut off with watch, and its
    /// messages come back after the visibility timeout, as after a crash on AWS.
    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        for mut task in self.tasks.drain(..) {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
        let watch = self.watch.clone();
        let _ = tokio::task::spawn_blocking(move || watch.stop()).await;
    }
}

impl Drop for LambdaStack {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Compiles (on first use) and initialises each function, so the first real request does
/// not wait for a build, and a function that cannot start is reported here.
fn warm_up(watch: &Watch) -> Result<(), String> {
    let (status, text) = send(
        ureq::http::Request::builder()
            .method("GET")
            .uri(format!("{}/api/v1/jobs/health", watch.api_url()))
            .body(())
            .expect("request builds"),
    )?;
    if status != 200 {
        return Err(format!(
            "the API's health check answered {status} {text}\n{}",
            watch.log_tail()
        ));
    }
    watch
        .invoke(WORKER, &json!({ "Records": [] }))
        .map_err(|e| format!("{e}\n{}", watch.log_tail()))?;
    watch
        .invoke(JANITOR, &scheduled_event())
        .map_err(|e| format!("{e}\n{}", watch.log_tail()))?;
    Ok(())
}

/// The event source mapping, running: polls the bands highest first; each batch of up to
/// `batch_size` messages goes to one worker invocation, with at most watch's concurrency
/// of them at once (one per free function instance). After a batch it starts again from
/// the high band, so a high-priority message waits for at most one poll.
async fn pump(
    source: EventSource,
    watch: Arc<Watch>,
    options: StackOptions,
    stop: Arc<AtomicBool>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(
        options.watch.concurrency.max(1),
    ));
    while !stop.load(Ordering::SeqCst) {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = None;
        for band in Band::ALL {
            match source.receive(band, options.batch_size, None).await {
                Ok(messages) if !messages.is_empty() => {
                    batch = Some((band, messages));
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("lambda-stack: {e}");
                    break;
                }
            }
        }
        let Some((band, messages)) = batch else {
            drop(permit);
            tokio::time::sleep(options.idle_poll).await;
            continue;
        };
        let source = source.clone();
        let watch = watch.clone();
        tokio::spawn(async move {
            let refs: Vec<&Message> = messages.iter().collect();
            let jobs: Vec<String> = messages.iter().map(job_of).collect();
            match source.deliver(&watch, band, &refs).await {
                Ok(failed) if failed.is_empty() => {}
                Ok(failed) => eprintln!(
                    "lambda-stack: the worker failed {failed:?} of {jobs:?}; they come back \
                     after the visibility timeout"
                ),
                Err(e) => eprintln!(
                    "lambda-stack: worker invocation for {jobs:?} failed: {e}; the messages \
                     come back after the visibility timeout"
                ),
            }
            drop(permit);
        });
    }
    // Let the invocations in flight settle their messages.
    let _ = slots
        .acquire_many(options.watch.concurrency.max(1) as u32)
        .await;
}

/// The janitor's schedule: one run every `every`, never two at once.
async fn janitor_schedule(watch: Arc<Watch>, every: Duration, stop: Arc<AtomicBool>) {
    let mut next = Instant::now() + every;
    while !stop.load(Ordering::SeqCst) {
        if Instant::now() < next {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let invoker = watch.clone();
        let report =
            tokio::task::spawn_blocking(move || invoker.invoke(JANITOR, &scheduled_event())).await;
        match report {
            Ok(Ok(report)) => {
                if report_did_something(&report) {
                    eprintln!("lambda-stack: janitor: {report}");
                }
            }
            Ok(Err(e)) => eprintln!("lambda-stack: janitor invocation failed: {e}"),
            Err(e) => eprintln!("lambda-stack: janitor invocation failed: {e}"),
        }
        next = Instant::now() + every;
    }
}

fn report_did_something(report: &Value) -> bool {
    report.as_object().is_some_and(|o| {
        o.values().any(|v| match v {
            Value::Array(a) => !a.is_empty(),
            Value::Number(n) => n.as_u64() != Some(0),
            _ => false,
        })
    })
}

/// A prefix for a stack's resources, unique on this machine.
pub fn unique_prefix(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{name}-{}-{nanos:x}", std::process::id())
}
