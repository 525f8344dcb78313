//! A router over real local ports (SQLite + files in a temporary directory) and helpers to
//! drive it with `oneshot`.
#![allow(dead_code)] // each test binary uses a different subset

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use vacal_core::{Config, JobService, Ports, Worker};

/// A small job that a test can run to `success` quickly.
pub const SMALL_JOB: &str =
    r#"{"va_data": {"eava": [10, 20, 30, 40, 5, 15]}, "mcmc": {"n_mcmc": 200, "n_burn": 200}}"#;

pub struct App {
    pub router: Router,
    pub ports: Ports,
    pub config: Config,
    _dir: tempfile::TempDir,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub raw: Vec<u8>,
}

impl Reply {
    /// Asserts the §2 error body with `status`.
    #[track_caller]
    pub fn assert_error(&self, status: u16) -> &Self {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(self.body["status_code"], status, "body: {}", self.body);
        let detail = self.body["detail"].as_str().expect("detail is a string");
        assert!(!detail.trim().is_empty(), "detail is empty");
        let ts = self.body["timestamp"]
            .as_str()
            .expect("timestamp is a string");
        assert!(ts.ends_with('Z'), "timestamp {ts} is not UTC with Z");
        assert!(
            chrono::DateTime::parse_from_rfc3339(ts).is_ok(),
            "timestamp {ts} is not RFC 3339"
        );
        assert!(
            self.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "error bodies are JSON"
        );
        self
    }

    pub fn detail(&self) -> &str {
        self.body["detail"].as_str().unwrap_or("")
    }
}

impl App {
    pub fn new() -> App {
        App::with_config(Config::default())
    }

    pub fn with_config(config: Config) -> App {
        let dir = tempfile::tempdir().expect("temporary directory");
        let ports = vacal_local::ports(dir.path()).expect("local ports open");
        App::with_ports(ports, config, dir)
    }

    pub fn with_ports(ports: Ports, config: Config, dir: tempfile::TempDir) -> App {
        let service = Arc::new(JobService::new(ports.clone(), config.clone()));
        App {
            router: vacal_http::router(service),
            ports,
            config,
            _dir: dir,
        }
    }

    pub async fn request(&self, req: Request<Body>) -> Reply {
        let response = self
            .router
            .clone()
            .oneshot(req)
            .await
            .expect("the router never fails");
        let status = response.status();
        let headers = response.headers().clone();
        let raw = response
            .into_body()
            .collect()
            .await
            .expect("body reads")
            .to_bytes()
            .to_vec();
        let body = if raw.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&raw).unwrap_or_else(|e| {
                panic!(
                    "response body is not JSON ({e}): {}",
                    String::from_utf8_lossy(&raw)
                )
            })
        };
        Reply {
            status,
            headers,
            body,
            raw,
        }
    }

    pub async fn send(&self, method: Method, uri: &str, body: Option<&str>) -> Reply {
        let mut builder = Request::builder().method(method).uri(uri);
        if body.is_some() {
            builder = builder.header("content-type", "application/json");
        }
        let body = body.map(|b| Body::from(b.to_string())).unwrap_or_default();
        self.request(builder.body(body).unwrap()).await
    }

    pub async fn get(&self, uri: &str) -> Reply {
        self.send(Method::GET, uri, None).await
    }

    pub async fn post(&self, uri: &str, body: &str) -> Reply {
        self.send(Method::POST, uri, Some(body)).await
    }

    pub async fn delete(&self, uri: &str) -> Reply {
        self.send(Method::DELETE, uri, None).await
    }

    /// Creates a job and returns its ID.
    pub async fn create(&self, body: &str) -> String {
        let r = self.post("/api/v1/calibrate/async", body).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body["job_id"].as_str().unwrap().to_string()
    }

    /// Runs a job to its end with a core worker, as the queue consumer would.
    pub async fn run(&self, job_id: &str) {
        Worker::new(self.ports.clone(), self.config.clone())
            .process(job_id)
            .await
            .expect("the worker processes the job");
    }

    /// Marks a job timed out, as the janitor would once `timeout_at` passed.
    pub async fn time_out(&self, job_id: &str) {
        Worker::new(self.ports.clone(), self.config.clone())
            .time_out(job_id)
            .await
            .expect("the job times out");
    }

    pub async fn status_of(&self, job_id: &str) -> String {
        let r = self
            .get(&format!("/api/v1/calibrate/{job_id}/status"))
            .await;
        r.body["status"].as_str().unwrap_or("").to_string()
    }
}
