//! Starts `vacal serve` as a child process on an ephemeral port and talks to it over HTTP;
//! or talks to an API served elsewhere ([`Remote`], e.g. the Lambda deployment run by
//! [`lambda_stack`]).

pub mod api_suite;
pub mod lambda_stack;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `vacal` binary next to this test executable (built by `cargo test --workspace`),
/// built on demand otherwise.
pub fn vacal_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let target = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let binary = target.join(format!("vacal{}", std::env::consts::EXE_SUFFIX));
    if !binary.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "vacal-cli"])
            .status()
            .expect("cargo build runs");
        assert!(status.success(), "building vacal failed");
    }
    binary
}

/// A running `vacal serve`; killed when dropped.
pub struct Server {
    pub base: String,
    pub child: Child,
    pub data_dir: PathBuf,
    env: Vec<(String, String)>,
    workers: usize,
}

impl Server {
    pub fn start(data_dir: &Path, workers: usize, env: &[(&str, &str)]) -> Server {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut command = Command::new(vacal_binary());
        command
            .args(["serve", "--port", "0", "--janitor-interval", "0.2"])
            .arg("--workers")
            .arg(workers.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in &env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("vacal serve starts");
        let stdout = child.stdout.take().expect("stdout piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("vacal serve prints its address");
        let base = line
            .trim()
            .strip_prefix("vacal listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_string();
        Server {
            base,
            child,
            data_dir: data_dir.to_path_buf(),
            env,
            workers,
        }
    }

    /// Kills the process without warning (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts again on the same data directory.
    pub fn restart(&mut self) {
        self.kill();
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        // The old process is already dead; dropping its handle just reaps nothing.
        *self = Server::start(&self.data_dir, self.workers, &env);
    }
}

impl Api for Server {
    fn base(&self) -> &str {
        &self.base
    }
}

/// An HTTP API under test: `vacal serve` started by the test ([`Server`]) or one served
/// elsewhere ([`Remote`]).
pub trait Api {
    /// The API's base URL, without a trailing slash (paths start with `/api/v1`).
    fn base(&self) -> &str;

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base(), path)
    }

    /// Sends a request; returns the status and the body parsed as JSON (Null if empty).
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (u16, Value, Vec<(String, String)>) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let url = self.url(path);
        let mut builder = ureq::http::Request::builder().method(method).uri(&url);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let response = match body {
            Some(b) => {
                let request = builder.body(b.to_string()).expect("request builds");
                agent.run(request)
            }
            None => {
                let request = builder.body(()).expect("request builds");
                agent.run(request)
            }
        }
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let text = response.into_body().read_to_string().unwrap_or_default();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, json, headers)
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let (s, v, _) = self.call("GET", path, None, &[]);
        (s, v)
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (s, v, _) = self.call(
            "POST",
            path,
            Some(&body.to_string()),
            &[("content-type", "application/json")],
        );
        (s, v)
    }

    fn delete(&self, path: &str) -> (u16, Value) {
        let (s, v, _) = self.call("DELETE", path, None, &[]);
        (s, v)
    }

    /// Creates a job and returns its ID.
    fn create(&self, body: &Value) -> String {
        let (status, v) = self.post("/api/v1/calibrate/async", body);
        assert_eq!(status, 200, "create: {v}");
        v["job_id"].as_str().expect("job_id").to_string()
    }

    /// How many times the job's log says it completed (once, whatever crashed or stopped).
    fn completions(&self, job_id: &str) -> usize {
        let (_, status) = self.get(&format!("/api/v1/calibrate/{job_id}/status?log_limit=1000"));
        status["logs"].as_array().map_or(0, |logs| {
            logs.iter()
                .filter(|l| l["message"] == "Calibration completed successfully")
                .count()
        })
    }

    /// Polls the job until it is terminal; returns its status response.
    fn wait(&self, job_id: &str, limit: Duration) -> Value {
        let started = Instant::now();
        loop {
            let (status, v) = self.get(&format!("/api/v1/calibrate/{job_id}/status"));
            assert_eq!(status, 200, "status of {job_id}: {v}");
            let s = v["status"].as_str().unwrap_or("");
            if !matches!(s, "pending" | "running") {
                return v;
            }
            assert!(
                started.elapsed() < limit,
                "{job_id} still {s} after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The variable that points the HTTP API suite at an API served elsewhere.
pub const API_URL_VAR: &str = "VACAL_API_URL";

/// The API base URL in `VACAL_API_URL` (without a trailing slash), if set.
pub fn external_api_url() -> Option<String> {
    std::env::var(API_URL_VAR)
        .ok()
        .map(|u| u.trim().trim_end_matches('/').to_string())
        .filter(|u| !u.is_empty())
}

/// The tests of one process take turns on a shared API.
static REMOTE_TURN: Mutex<()> = Mutex::new(());

/// An API served elsewhere, held by one test at a time.
pub struct Remote {
    base: String,
    _turn: MutexGuard<'static, ()>,
}

impl Remote {
    /// Waits for this process's other tests to finish with the API, then deletes every
    /// job and cached result there: the scenarios count jobs and cache entries as on a
    /// server of their own. Only point it at an API whose data may be thrown away.
    pub fn exclusive(base: &str) -> Remote {
        // A test that failed while holding the turn has still released it.
        let turn = REMOTE_TURN.lock().unwrap_or_else(|e| e.into_inner());
        let remote = Remote {
            base: base.trim_end_matches('/').to_string(),
            _turn: turn,
        };
        for path in [
            "/api/v1/jobs/clear/all?confirm=true",
            "/api/v1/cache/clear?confirm=true",
        ] {
            let (status, body) = remote.delete(path);
            assert_eq!(status, 200, "DELETE {path} on {base}: {body}");
        }
        remote
    }
}

impl Api for Remote {
    fn base(&self) -> &str {
        &self.base
    }
}

/// Asserts the error body of §2: detail, status_code equal to the status, timestamp.
pub fn assert_error_body(status: u16, body: &Value) {
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "detail in {body}"
    );
    assert_eq!(
        body["status_code"].as_u64(),
        Some(u64::from(status)),
        "status_code in {body}"
    );
    assert!(
        body["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
        "timestamp in {body}"
    );
}
