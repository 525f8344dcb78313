//! The `vacal` client: submit, validate, follow and fetch jobs of any vacal API (a
//! `vacal serve` or the deployed one). Exit codes: 0 success, 1 the job failed, 2 bad usage
//! or a 4xx answer, 3 `wait` timed out, 4 the job was cancelled or timed out, 5 the server
//! is unreachable or answered 5xx.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Map, Value};
use vacal_contract::{CalibrationOutput, JobListResponse, JobStatusResponse};

use crate::calibrate_cmd::table;

#[derive(Args, Clone)]
pub struct Connection {
    /// Base URL of the vacal API.
    #[arg(
        long,
        env = "VACAL_URL",
        default_value = "http://127.0.0.1:8000",
        global = true
    )]
    url: String,
    /// API key, when the server requires one.
    #[arg(long, env = "VACAL_API_KEY", global = true, hide_env_values = true)]
    api_key: Option<String>,
    /// Print the API's JSON answers instead of tables and lines.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Args)]
pub struct Inputs {
    /// An algorithm's file: ALGORITHM=FILE (CSV or TSV, long, wide or counts form); repeat
    /// for each algorithm.
    #[arg(long = "data", value_name = "ALGORITHM=FILE")]
    data: Vec<String>,
    /// The bundled COMSA-Mozambique example of these algorithms (comma separated).
    #[arg(long, value_delimiter = ',', num_args = 0.., default_missing_value = "insilicova")]
    example: Option<Vec<String>>,
    #[arg(long)]
    age_group: Option<String>,
    #[arg(long)]
    country: Option<String>,
    /// vacalibration's rules: 2.3.1 (default) or 2.2.
    #[arg(long)]
    rules: Option<String>,
    /// A JSON request body whose fields the options above override.
    #[arg(long, value_name = "FILE")]
    request: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ResultFormat {
    Table,
    Json,
    Csv,
}

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Submit a calibration job.
    Submit {
        #[command(flatten)]
        inputs: Inputs,
        /// Wait for the job and print its result.
        #[arg(long)]
        wait: bool,
    },
    /// Check a request without running it: counts, causes left uncalibrated, warnings.
    Validate {
        #[command(flatten)]
        inputs: Inputs,
    },
    /// A job's status.
    Status { job: String },
    /// Wait for a job to finish, showing its progress, then print its result.
    Wait {
        job: String,
        /// Give up after this many seconds (exit code 3).
        #[arg(long)]
        timeout: Option<f64>,
    },
    /// A finished job's result.
    Result {
        job: String,
        #[arg(long, value_enum, default_value = "table")]
        format: ResultFormat,
        /// Also save the figure (SVG) here.
        #[arg(long, value_name = "FILE")]
        plot: Option<PathBuf>,
        /// Also save the report (HTML) here.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
    },
    /// Cancel a pending or running job.
    Cancel { job: String },
    /// Recent jobs, newest first.
    Jobs {
        /// Only jobs with this status.
        #[arg(long)]
        status: Option<String>,
    },
}

/// Why a command ends without success, and its exit code.
#[derive(Debug)]
enum Failure {
    Usage(String),
    Refused(u16, String),
    Server(String),
    JobFailed(String),
    WaitTimedOut(String),
    JobStopped(String),
}

impl Failure {
    fn exit(self) -> ExitCode {
        let (code, message) = match self {
            Failure::Usage(m) => (2, m),
            Failure::Refused(status, m) => (2, format!("the server refused ({status}): {m}")),
            Failure::JobFailed(m) => (1, m),
            Failure::WaitTimedOut(m) => (3, m),
            Failure::JobStopped(m) => (4, m),
            Failure::Server(m) => (5, m),
        };
        eprintln!("error: {message}");
        ExitCode::from(code)
    }
}

struct Client {
    base: String,
    api_key: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    fn new(connection: &Connection) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        Client {
            base: connection.url.trim_end_matches('/').to_string(),
            api_key: connection.api_key.clone(),
            agent,
        }
    }

    /// Sends a request; a 4xx or 5xx answer or no answer is a `Failure`.
    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Vec<u8>, Failure> {
        let url = format!("{}{path}", self.base);
        let mut request = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(key) = &self.api_key {
            request = request.header("x-api-key", key);
        }
        let response = match body {
            Some((content_type, bytes)) => {
                let request = request
                    .header("content-type", content_type)
                    .body(bytes)
                    .map_err(|e| Failure::Usage(format!("{url}: {e}")))?;
                self.agent.run(request)
            }
            None => {
                let request = request
                    .body(())
                    .map_err(|e| Failure::Usage(format!("{url}: {e}")))?;
                self.agent.run(request)
            }
        }
        .map_err(|e| Failure::Server(format!("cannot reach {url}: {e}")))?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .read_to_vec()
            .map_err(|e| Failure::Server(format!("{url}: the answer could not be read: {e}")))?;
        if status < 400 {
            return Ok(bytes);
        }
        let detail = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v["detail"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        if status >= 500 {
            Err(Failure::Server(format!(
                "{method} {path} failed ({status}): {detail}"
            )))
        } else {
            Err(Failure::Refused(status, detail))
        }
    }

    fn json(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, Failure> {
        let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
        let bytes = self.send(method, path, body)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Failure::Server(format!("{path}: the answer is not JSON: {e}")))
    }

    fn typed<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, Failure> {
        serde_json::from_value(self.json("GET", path, None)?)
            .map_err(|e| Failure::Server(format!("{path}: unexpected answer: {e}")))
    }
}

/// The request body, and the files to upload with it (part name, path).
type RequestAndFiles = (Map<String, Value>, Vec<(String, PathBuf)>);

fn request_of(inputs: &Inputs) -> Result<RequestAndFiles, Failure> {
    let mut body = match &inputs.request {
        None => Map::new(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))?;
            match serde_json::from_str(&text) {
                Ok(Value::Object(body)) => body,
                _ => {
                    return Err(Failure::Usage(format!(
                        "{} is not a JSON object",
                        path.display()
                    )))
                }
            }
        }
    };
    for (field, value) in [
        ("age_group", &inputs.age_group),
        ("country", &inputs.country),
        ("rules", &inputs.rules),
    ] {
        if let Some(value) = value {
            body.insert(field.into(), json!(value));
        }
    }
    if let Some(algorithms) = &inputs.example {
        let va: Map<String, Value> = algorithms
            .iter()
            .map(|a| (a.clone(), json!("use_example")))
            .collect();
        body.insert("va_data".into(), Value::Object(va));
    }
    let mut files = Vec::new();
    for data in &inputs.data {
        let (algorithm, path) = data.split_once('=').ok_or_else(|| {
            Failure::Usage(format!(
                "--data {data}: write ALGORITHM=FILE, e.g. eava=eava.csv"
            ))
        })?;
        files.push((format!("va_data.{algorithm}"), PathBuf::from(path)));
    }
    Ok((body, files))
}

/// POSTs the inputs as JSON, or as multipart/form-data when there are files.
fn post_inputs(client: &Client, path: &str, inputs: &Inputs) -> Result<Value, Failure> {
    let (body, files) = request_of(inputs)?;
    if files.is_empty() {
        return client.json("POST", path, Some(&Value::Object(body)));
    }
    let boundary = format!("vacal-{:016x}", rand_boundary());
    let mut bytes = Vec::new();
    let mut part = |name: &str, filename: Option<&str>, content: &[u8]| {
        let filename = filename.map_or(String::new(), |f| format!("; filename=\"{f}\""));
        bytes.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"{filename}\r\n\r\n"
            )
            .as_bytes(),
        );
        bytes.extend_from_slice(content);
        bytes.extend_from_slice(b"\r\n");
    };
    part("request", None, Value::Object(body).to_string().as_bytes());
    for (name, path) in &files {
        let content = std::fs::read(path)
            .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))?;
        let filename = path
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or("data.csv");
        part(name, Some(filename), &content);
    }
    bytes.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let answer = client.send("POST", path, Some((&content_type, bytes)))?;
    serde_json::from_slice(&answer)
        .map_err(|e| Failure::Server(format!("{path}: the answer is not JSON: {e}")))
}

/// A boundary that does not occur in the files (with overwhelming probability).
fn rand_boundary() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32) ^ 0x9E37_79B9_7F4A_7C15
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// Waits for a terminal status; on a terminal, a progress bar with the step names.
fn wait(
    client: &Client,
    job: &str,
    timeout: Option<f64>,
    quiet: bool,
) -> Result<JobStatusResponse, Failure> {
    let started = Instant::now();
    let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(100);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{bar:30}] {pos:>3}% {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    });
    let mut last_step = String::new();
    loop {
        let status: JobStatusResponse =
            client.typed(&format!("/api/v1/calibrate/{job}/status?log_limit=1"))?;
        let (step, percent) = status
            .progress
            .as_ref()
            .map_or((status.status.as_str().to_string(), 0.0), |p| {
                (p.step_name.clone(), p.progress_percentage)
            });
        match &bar {
            Some(bar) => {
                bar.set_position(percent as u64);
                bar.set_message(step.clone());
            }
            None if !quiet && step != last_step => eprintln!("{job}: {step} ({percent:.0}%)"),
            None => {}
        }
        last_step = step;
        if status.status.is_terminal() {
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            return Ok(status);
        }
        if timeout.is_some_and(|t| started.elapsed().as_secs_f64() >= t) {
            if let Some(bar) = bar {
                bar.abandon();
            }
            return Err(Failure::WaitTimedOut(format!(
                "{job} is still {} after {:.0} s",
                status.status.as_str(),
                started.elapsed().as_secs_f64()
            )));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The outcome of a terminal job as an exit: its result printed, or why there is none.
fn finished(
    client: &Client,
    status: JobStatusResponse,
    connection: &Connection,
) -> Result<(), Failure> {
    let job = status.job_id.as_str();
    let reason = || {
        status
            .error_details
            .as_ref()
            .map_or(String::new(), |e| format!(": {}", e.error_message))
    };
    match status.status.as_str() {
        "success" => print_result(client, job, ResultFormat::Table, connection),
        "failed" => Err(Failure::JobFailed(format!("{job} failed{}", reason()))),
        other => Err(Failure::JobStopped(format!(
            "{job} ended {other}{}",
            reason()
        ))),
    }
}

fn print_result(
    client: &Client,
    job: &str,
    format: ResultFormat,
    connection: &Connection,
) -> Result<(), Failure> {
    match (format, connection.json) {
        (ResultFormat::Csv, _) => {
            let csv = client.send("GET", &format!("/api/v1/calibrate/{job}/result.csv"), None)?;
            print!("{}", String::from_utf8_lossy(&csv));
        }
        (ResultFormat::Json, _) | (_, true) => {
            print_json(&client.json("GET", &format!("/api/v1/calibrate/{job}/result"), None)?);
        }
        (ResultFormat::Table, false) => {
            let answer = client.json("GET", &format!("/api/v1/calibrate/{job}/result"), None)?;
            let output: CalibrationOutput = serde_json::from_value(answer["result"].clone())
                .map_err(|_| {
                    Failure::JobFailed(format!("{job} has no result: {}", answer["result"]))
                })?;
            print!("{}", table(&output));
        }
    }
    Ok(())
}

fn save(client: &Client, path: &str, file: &PathBuf) -> Result<(), Failure> {
    let bytes = client.send("GET", path, None)?;
    std::fs::write(file, bytes)
        .map_err(|e| Failure::Usage(format!("cannot write {}: {e}", file.display())))?;
    eprintln!("saved {}", file.display());
    Ok(())
}

fn run_command(command: ClientCommand, connection: &Connection) -> Result<(), Failure> {
    let client = Client::new(connection);
    match command {
        ClientCommand::Submit {
            inputs,
            wait: then_wait,
        } => {
            let created = post_inputs(&client, "/api/v1/calibrate/async", &inputs)?;
            let job = created["job_id"].as_str().unwrap_or_default().to_string();
            if connection.json && !then_wait {
                print_json(&created);
            } else if !then_wait {
                println!("{job}");
            }
            if then_wait {
                let status = wait(&client, &job, None, connection.json)?;
                return finished(&client, status, connection);
            }
            Ok(())
        }
        ClientCommand::Validate { inputs } => {
            let preview = post_inputs(&client, "/api/v1/validate", &inputs)?;
            if connection.json {
                print_json(&preview);
            } else {
                print_preview(&preview);
            }
            if preview["valid"] == true {
                Ok(())
            } else {
                Err(Failure::Refused(
                    422,
                    "the request is not valid (see above)".into(),
                ))
            }
        }
        ClientCommand::Status { job } => {
            let status = client.json("GET", &format!("/api/v1/calibrate/{job}/status"), None)?;
            if connection.json {
                print_json(&status);
            } else {
                let step = status["progress"]["step_name"].as_str().unwrap_or("-");
                println!(
                    "{job}: {} ({step})",
                    status["status"].as_str().unwrap_or("?")
                );
            }
            Ok(())
        }
        ClientCommand::Wait { job, timeout } => {
            let status = wait(&client, &job, timeout, connection.json)?;
            finished(&client, status, connection)
        }
        ClientCommand::Result {
            job,
            format,
            plot,
            report,
        } => {
            print_result(&client, &job, format, connection)?;
            if let Some(file) = plot {
                save(&client, &format!("/api/v1/calibrate/{job}/plot.svg"), &file)?;
            }
            if let Some(file) = report {
                save(
                    &client,
                    &format!("/api/v1/calibrate/{job}/report.html"),
                    &file,
                )?;
            }
            Ok(())
        }
        ClientCommand::Cancel { job } => {
            let answer = client.json("DELETE", &format!("/api/v1/calibrate/{job}"), None)?;
            if connection.json {
                print_json(&answer);
            } else {
                println!("{job}: cancelled");
            }
            Ok(())
        }
        ClientCommand::Jobs { status } => {
            let query = status.map_or(String::new(), |s| format!("?status={s}"));
            let list: JobListResponse = client.typed(&format!("/api/v1/jobs{query}"))?;
            if connection.json {
                print_json(&serde_json::to_value(&list).unwrap_or_default());
                return Ok(());
            }
            println!(
                "{:<18} {:<10} {:<28} {:<8} country",
                "job", "status", "created", "age"
            );
            for job in &list.jobs {
                println!(
                    "{:<18} {:<10} {:<28} {:<8} {}",
                    job.metadata.job_id,
                    job.status.as_str(),
                    job.metadata.created_at,
                    job.age_group.as_deref().unwrap_or("-"),
                    job.country.as_deref().unwrap_or("-"),
                );
            }
            Ok(())
        }
    }
}

fn print_preview(preview: &Value) {
    let valid = preview["valid"] == true;
    println!("{}", if valid { "valid" } else { "not valid" });
    for e in preview["errors"].as_array().into_iter().flatten() {
        println!(
            "  error: {}: {}",
            e["field"].as_str().unwrap_or(""),
            e["message"].as_str().unwrap_or("")
        );
    }
    for (algorithm, a) in preview["algorithms"].as_object().into_iter().flatten() {
        println!(
            "{algorithm}: {} form, {} deaths ({} Unspecified dropped)",
            a["form"].as_str().unwrap_or("?"),
            a["deaths"],
            a["unspecified_dropped"]
        );
        for (cause, n) in a["counts"].as_object().into_iter().flatten() {
            let left_out = a["not_calibrated"][cause]
                .as_str()
                .map_or(String::new(), |why| format!("  not calibrated: {why}"));
            println!("  {cause:<24} {n:>6}{left_out}");
        }
    }
    for w in preview["warnings"].as_array().into_iter().flatten() {
        println!("warning: {}", w.as_str().unwrap_or(""));
    }
}

pub fn run(command: ClientCommand, connection: Connection) -> ExitCode {
    match run_command(command, &connection) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.exit(),
    }
}
