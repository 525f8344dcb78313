//! The AWS deployment end to end: the real Lambda binaries (`vacal-api`, `vacal-worker`,
//! `vacal-janitor`) under `cargo lambda watch`, against the AWS emulator named by
//! `AWS_ENDPOINT_URL` (moto from tests/aws/emulator.sh, or LocalStack). The test plays the
//! parts AWS plays in production: the function URL in front of the API, the SQS event
//! source mapping (receive, invoke the worker, delete what succeeded) and the schedule
//! that invokes the janitor.
//!
//! Run: `bash tests/aws/emulator.sh cargo test -p vacal-e2e --test aws_lambda`.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::MessageSystemAttributeName;
use serde_json::{json, Value};
use vacal_aws::provision::{create_all, require_loopback_endpoint, MAX_RECEIVE_COUNT};
use vacal_aws::{AwsEnv, Band, Clients};

/// A quick but real calibration of the bundled example.
fn request(country: &str, extra: Value) -> Value {
    let mut body = json!({
        "age_group": "neonate",
        "country": country,
        "mcmc": {"n_mcmc": 400, "n_burn": 400, "n_chain": 2}
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

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

/// `cargo lambda watch` in its own process group; the group is stopped when dropped.
struct Watch {
    child: Child,
    base: String,
    output: Arc<Mutex<Vec<String>>>,
}

impl Watch {
    fn start(env: &AwsEnv) -> Watch {
        let port = free_port();
        let vars = [
            ("JOBS_TABLE", env.jobs_table.as_str()),
            ("RESULTS_BUCKET", env.results_bucket.as_str()),
            ("QUEUE_URL_HIGH", env.queues.high.as_str()),
            ("QUEUE_URL_NORMAL", env.queues.normal.as_str()),
            ("QUEUE_URL_LOW", env.queues.low.as_str()),
            ("DLQ_URL_HIGH", env.dead_letter_queues.high.as_str()),
            ("DLQ_URL_NORMAL", env.dead_letter_queues.normal.as_str()),
            ("DLQ_URL_LOW", env.dead_letter_queues.low.as_str()),
        ];
        let mut command = Command::new(env!("CARGO"));
        command
            .args(["lambda", "watch", "--ignore-changes", "--quiet"])
            .args(["--invoke-address", "127.0.0.1", "--invoke-port"])
            .arg(port.to_string())
            // Several invocations at once: the batch test runs the worker while the API
            // answers.
            .args(["--concurrency", "2"])
            .current_dir(workspace_root())
            .envs(vars)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot run `cargo lambda watch` ({e}); install it with \
                 `bash tests/aws/emulator.sh ...`, which puts cargo-lambda from .venv on PATH"
            )
        });
        let output = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    output.lock().unwrap().push(line);
                }
            });
        }
        let watch = Watch {
            child,
            base: format!("http://127.0.0.1:{port}"),
            output,
        };
        // The control plane answers once it is up; functions compile on first use.
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "cargo lambda watch did not listen on {port}: {}",
                watch.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        watch
    }

    fn log_tail(&self) -> String {
        let lines = self.output.lock().unwrap();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Sends an HTTP request to the API through its function URL.
    fn api(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let url = format!("{}/lambda-url/vacal-api{path}", self.base);
        let mut builder = ureq::http::Request::builder().method(method).uri(&url);
        if body.is_some() {
            builder = builder.header("content-type", "application/json");
        }
        let request = builder
            .body(body.map(|b| b.to_string()).unwrap_or_default())
            .expect("request builds");
        let (status, text) = send(request);
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{method} {path}: {status} {text}\n{}", self.log_tail()));
        (status, json)
    }

    /// Invokes a function as the Lambda service does, with `payload` as its event.
    fn invoke(&self, function: &str, payload: &Value) -> Value {
        let url = format!("{}/2015-03-31/functions/{function}/invocations", self.base);
        let request = ureq::http::Request::builder()
            .method("POST")
            .uri(&url)
            .header("content-type", "application/json")
            .body(payload.to_string())
            .expect("request builds");
        let (status, text) = send(request);
        assert_eq!(
            status,
            200,
            "invoking {function}: {text}\n{}",
            self.log_tail()
        );
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{function} answered {text}"))
    }

    /// Milliseconds each function logged for its init (`initialised` lines).
    fn init_times(&self) -> Vec<String> {
        self.output
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("\"initialised\"") || l.contains("init_ms"))
            .cloned()
            .collect()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // SIGTERM lets watch stop the function processes it started (each in a process
        // group of its own); SIGKILL only if it does not exit.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn send<B: ureq::AsSendBody>(request: ureq::http::Request<B>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        // The first call to each function compiles it.
        .timeout_global(Some(Duration::from_secs(900)))
        .build()
        .into();
    let uri = request.uri().to_string();
    let response = agent.run(request).unwrap_or_else(|e| panic!("{uri}: {e}"));
    let status = response.status().as_u16();
    (
        status,
        response.into_body().read_to_string().unwrap_or_default(),
    )
}

/// The part of AWS that the test plays: receives messages and invokes the worker with
/// them as the event source mapping does, deleting those the worker did not report.
struct Sqs {
    clients: Clients,
    env: AwsEnv,
}

impl Sqs {
    /// Messages now visible in one band's queue, hidden for `visibility` seconds.
    async fn receive(&self, band: Band, visibility: i32) -> Vec<aws_sdk_sqs::types::Message> {
        self.clients
            .sqs
            .receive_message()
            .queue_url(self.env.queues.of(band))
            .max_number_of_messages(10)
            .visibility_timeout(visibility)
            .wait_time_seconds(0)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .expect("ReceiveMessage")
            .messages
            .unwrap_or_default()
    }

    /// Every visible message of every band (band, message).
    async fn receive_all(&self) -> Vec<(Band, aws_sdk_sqs::types::Message)> {
        let mut all = Vec::new();
        for band in Band::ALL {
            for m in self.receive(band, 60).await {
                all.push((band, m));
            }
        }
        all
    }

    fn event(&self, band: Band, messages: &[&aws_sdk_sqs::types::Message]) -> Value {
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
                    "eventSourceARN": format!("arn:aws:sqs:us-east-1:000000000000:{}", self.env.queues.of(band).rsplit('/').next().unwrap()),
                    "awsRegion": "us-east-1"
                })
            })
            .collect();
        json!({ "Records": records })
    }

    /// Invokes the worker with one band's messages and settles them as Lambda does;
    /// returns the IDs the worker reported as failed.
    async fn deliver(
        &self,
        watch: &Watch,
        band: Band,
        messages: &[&aws_sdk_sqs::types::Message],
    ) -> Vec<String> {
        let response = watch.invoke("vacal-worker", &self.event(band, messages));
        let failed: Vec<String> = response["batchItemFailures"]
            .as_array()
            .unwrap_or_else(|| panic!("not an SqsBatchResponse: {response}"))
            .iter()
            .map(|f| f["itemIdentifier"].as_str().unwrap_or_default().to_string())
            .collect();
        for m in messages {
            if !failed.iter().any(|f| Some(f.as_str()) == m.message_id()) {
                self.clients
                    .sqs
                    .delete_message()
                    .queue_url(self.env.queues.of(band))
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .expect("DeleteMessage");
            }
        }
        failed
    }

    /// Receives and delivers until no message is left (bounded); returns the job IDs run.
    async fn run_until_idle(&self, watch: &Watch) -> Vec<String> {
        let mut ran = Vec::new();
        for _ in 0..20 {
            let got = self.receive_all().await;
            if got.is_empty() {
                return ran;
            }
            for (band, m) in &got {
                ran.push(job_of(m));
                let failed = self.deliver(watch, *band, &[m]).await;
                assert!(failed.is_empty(), "worker failed {failed:?}");
            }
        }
        panic!("the queues never drained; ran {ran:?}");
    }
}

fn job_of(m: &aws_sdk_sqs::types::Message) -> String {
    let body: Value = serde_json::from_str(m.body().unwrap_or("{}")).expect("a JSON body");
    body["job_id"].as_str().expect("job_id").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lambda_functions_run_jobs_end_to_end() {
    if let Err(why) = require_loopback_endpoint() {
        panic!("{why}");
    }
    let clients = Clients::for_emulator().await;
    let prefix = format!("ve2e-{}", std::process::id());
    let env = create_all(&clients, &prefix, 60)
        .await
        .unwrap_or_else(|e| panic!("cannot create the test resources: {e:?}"));
    let sqs = Sqs {
        clients: clients.clone(),
        env: env.clone(),
    };
    let watch = Watch::start(&env);

    // 1. Create over the function URL, run the message through the worker, read the result.
    let (status, created) = watch.api(
        "POST",
        "/api/v1/calibrate/async",
        Some(&request(
            "Mozambique",
            json!({"priority": 9, "use_cache": true}),
        )),
    );
    assert_eq!(status, 200, "{created}");
    let first = created["job_id"].as_str().unwrap().to_string();
    let high = sqs.receive(Band::High, 60).await;
    assert_eq!(high.len(), 1, "priority 9 goes to the high band");
    assert_eq!(job_of(&high[0]), first);
    let failed = sqs.deliver(&watch, Band::High, &[&high[0]]).await;
    assert!(failed.is_empty(), "{failed:?}\n{}", watch.log_tail());
    let (status, job) = watch.api("GET", &format!("/api/v1/calibrate/{first}/status"), None);
    assert_eq!(
        (status, job["status"].as_str()),
        (200, Some("success")),
        "{job}"
    );
    let (status, result) = watch.api("GET", &format!("/api/v1/calibrate/{first}/result"), None);
    assert_eq!(status, 200, "{result}");
    assert!(result.to_string().contains("calibrated"), "{result}");
    let object = clients
        .s3
        .list_objects_v2()
        .bucket(&env.results_bucket)
        .prefix("results/")
        .send()
        .await
        .unwrap();
    assert_eq!(
        object.contents().len(),
        1,
        "one result object under results/"
    );

    // 2. Cache hit: the same request again is answered from the first job's result.
    let (_, again) = watch.api(
        "POST",
        "/api/v1/calibrate/async",
        Some(&request(
            "Mozambique",
            json!({"priority": 9, "use_cache": true}),
        )),
    );
    let cached = again["job_id"].as_str().unwrap().to_string();
    assert_eq!(sqs.run_until_idle(&watch).await, vec![cached.clone()]);
    let (_, job) = watch.api("GET", &format!("/api/v1/calibrate/{cached}/status"), None);
    assert_eq!(job["status"], "success", "{job}");
    assert_eq!(
        job["progress"]["step_name"], "Completed (cached)",
        "answered from {first}'s result: {job}"
    );
    let (_, stats) = watch.api("GET", "/api/v1/cache/stats", None);
    assert!(stats.to_string().contains("hit"), "{stats}");

    // 3. A batch with parallel_limit 1: one member is queued at a time.
    let (status, batch) = watch.api(
        "POST",
        "/api/v1/calibrate/batch",
        Some(&json!({
            "jobs": [request("Kenya", json!({})), request("Mali", json!({})), request("Ghana", json!({}))],
            "parallel_limit": 1
        })),
    );
    assert_eq!(status, 200, "{batch}");
    let batch_id = batch["batch_id"].as_str().unwrap().to_string();
    let members: Vec<String> = batch["job_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j.as_str().unwrap().to_string())
        .collect();
    let mut order = Vec::new();
    for _ in 0..members.len() {
        let visible = sqs.receive_all().await;
        assert_eq!(
            visible.len(),
            1,
            "parallel_limit 1 queues one member at a time: {:?}",
            visible.iter().map(|(_, m)| job_of(m)).collect::<Vec<_>>()
        );
        let (band, m) = &visible[0];
        order.push(job_of(m));
        assert!(sqs.deliver(&watch, *band, &[m]).await.is_empty());
    }
    let mut sorted_order = order.clone();
    sorted_order.sort();
    let mut sorted_members = members.clone();
    sorted_members.sort();
    assert_eq!(sorted_order, sorted_members, "every member ran once");
    let (_, batch_status) = watch.api(
        "GET",
        &format!("/api/v1/calibrate/batch/{batch_id}/status"),
        None,
    );
    assert!(
        batch_status.to_string().contains("completed"),
        "{batch_status}"
    );

    // 4. Cancel: the message still arrives; the worker acks it and the job stays cancelled.
    let (_, created) = watch.api(
        "POST",
        "/api/v1/calibrate/async",
        Some(&request("Kenya", json!({}))),
    );
    let cancelled = created["job_id"].as_str().unwrap().to_string();
    let (status, body) = watch.api("DELETE", &format!("/api/v1/calibrate/{cancelled}"), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(sqs.run_until_idle(&watch).await, vec![cancelled.clone()]);
    let (_, job) = watch.api(
        "GET",
        &format!("/api/v1/calibrate/{cancelled}/status"),
        None,
    );
    assert_eq!(job["status"], "cancelled", "{job}");

    // 5. A malformed message is acked by the real worker (nothing can ever process it).
    clients
        .sqs
        .send_message()
        .queue_url(&env.queues.normal)
        .message_body("this is not a job message")
        .send()
        .await
        .unwrap();
    let junk = sqs.receive(Band::Normal, 60).await;
    assert_eq!(junk.len(), 1);
    assert!(sqs
        .deliver(&watch, Band::Normal, &[&junk[0]])
        .await
        .is_empty());

    // 6. Poison: every delivery of this job's message dies (the invocation crashes or
    // times out, so nothing settles it). After maxReceiveCount deliveries SQS moves it to
    // the dead-letter queue, and the next janitor run fails the job with the reason.
    let (_, created) = watch.api(
        "POST",
        "/api/v1/calibrate/async",
        Some(&request("Mali", json!({"priority": 2}))),
    );
    let poisoned = created["job_id"].as_str().unwrap().to_string();
    for delivery in 1..=MAX_RECEIVE_COUNT {
        let got = sqs.receive(Band::Low, 1).await;
        assert_eq!(got.len(), 1, "delivery {delivery}");
        assert_eq!(job_of(&got[0]), poisoned);
        tokio::time::sleep(Duration::from_millis(1300)).await;
    }
    assert!(
        sqs.receive(Band::Low, 1).await.is_empty(),
        "moved to the DLQ"
    );
    let report = watch.invoke(
        "vacal-janitor",
        &json!({
            "version": "0", "id": "e2e", "detail-type": "Scheduled Event", "source": "aws.events",
            "account": "000000000000", "time": "2024-01-15T14:25:00Z", "region": "us-east-1",
            "resources": [], "detail": {}
        }),
    );
    assert_eq!(report["dead_lettered"], json!([poisoned]), "{report}");
    let (_, job) = watch.api("GET", &format!("/api/v1/calibrate/{poisoned}/status"), None);
    assert_eq!(job["status"], "failed", "{job}");
    assert!(job.to_string().contains("DeliveryFailed"), "{job}");

    for line in watch.init_times() {
        eprintln!("init: {line}");
    }
}
