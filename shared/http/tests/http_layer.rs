//! HTTP-level behaviour: body parsing, error bodies on every non-2xx, auth, rate limit,
//! CORS, security headers, request ids, panics and storage outages.

mod common;

use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use chrono::{DateTime, Utc};
use common::{App, Reply, SMALL_JOB};
use vacal_core::domain::{Batch, CacheEntry, Job, JobStatus, LogEntry, LogLevel};
use vacal_core::ports::{
    CacheCounter, CacheCounters, Delivery, JobFilter, JobQueue, JobStore, ResultStore, StoreError,
    StoreResult, Write,
};
use vacal_core::{Config, Ports};

const SECURITY_HEADERS: [(&str, &str); 5] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("x-xss-protection", "1; mode=block"),
    (
        "strict-transport-security",
        "max-age=31536000; includeSubDomains",
    ),
    ("referrer-policy", "strict-origin-when-cross-origin"),
];

fn raw(method: &str, uri: &str) -> axum::http::request::Builder {
    Request::builder().method(method).uri(uri)
}

#[track_caller]
fn assert_common_headers(r: &Reply) {
    for (name, value) in SECURITY_HEADERS {
        assert_eq!(
            r.headers.get(name).and_then(|v| v.to_str().ok()),
            Some(value),
            "{name} on a {} response",
            r.status
        );
    }
    let id = r.headers.get("x-request-id").expect("x-request-id is set");
    assert!(!id.is_empty());
}

#[tokio::test]
async fn bodies_that_are_not_json_objects_are_400() {
    let app = App::new();
    for uri in ["/api/v1/calibrate/async", "/api/v1/calibrate/batch"] {
        for body in [
            "",
            "   ",
            "{not json",
            "[1, 2]",
            "null",
            "\"text\"",
            "{\"a\": 1",
        ] {
            let r = app.post(uri, body).await;
            r.assert_error(400);
            assert_common_headers(&r);
        }
        // Invalid UTF-8 is not JSON either.
        let r = app
            .request(
                raw("POST", uri)
                    .header("content-type", "application/json")
                    .body(Body::from(vec![b'{', 0xff, b'}']))
                    .unwrap(),
            )
            .await;
        r.assert_error(400);
    }
    let r = app.post("/api/v1/calibrate/async", "{bad").await;
    assert!(r.detail().contains("not valid JSON"), "{}", r.body);
    let r = app.post("/api/v1/calibrate/async", "").await;
    assert!(r.detail().contains("required"), "{}", r.body);
}

#[tokio::test]
async fn content_type_must_be_json_when_present() {
    let app = App::new();
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/json; charset=latin1",
    ] {
        let r = app
            .request(
                raw("POST", "/api/v1/calibrate/async")
                    .header("content-type", ct)
                    .body(Body::from("{}"))
                    .unwrap(),
            )
            .await;
        r.assert_error(415);
        assert!(r.detail().contains("application/json"));
    }
    // A missing Content-Type is accepted (API Gateway may drop it), and so are JSON variants.
    let r = app
        .request(
            raw("POST", "/api/v1/calibrate/async")
                .body(Body::from(SMALL_JOB))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body["job_id"].as_str().unwrap().starts_with("job_"));
    let r = app
        .request(
            raw("POST", "/api/v1/calibrate/batch")
                .header("content-type", "application/json; charset=utf-8")
                .body(Body::from(r#"{"jobs": [{}]}"#))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let app = App::with_config(Config {
        max_request_bytes: 100,
        ..Config::default()
    });
    let big = format!(r#"{{"country": "{}"}}"#, "x".repeat(200));
    // Without a Content-Length header the limit applies while reading.
    let r = app.post("/api/v1/calibrate/async", &big).await;
    r.assert_error(413);
    assert!(r.detail().contains("100 bytes"), "{}", r.body);
    // A declared length over the limit is refused up front.
    let r = app
        .request(
            raw("POST", "/api/v1/calibrate/batch")
                .header("content-type", "application/json")
                .header("content-length", big.len().to_string())
                .body(Body::from(big.clone()))
                .unwrap(),
        )
        .await;
    r.assert_error(413);
    assert_common_headers(&r);
    // An uploaded file counts towards the same limit, for jobs and previews.
    let file = format!("ID,cause\n{}", "1,Prematurity\n".repeat(20));
    let upload = format!(
        "--b\r\nContent-Disposition: form-data; name=\"va_data.eava\"\r\n\r\n{file}\r\n--b--\r\n"
    );
    for path in ["/api/v1/calibrate/async", "/api/v1/validate"] {
        let r = app
            .request(
                raw("POST", path)
                    .header("content-type", "multipart/form-data; boundary=b")
                    .body(Body::from(upload.clone()))
                    .unwrap(),
            )
            .await;
        r.assert_error(413);
    }
    // Just under the limit is fine.
    assert_eq!(
        app.post("/api/v1/calibrate/async", "{}").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_have_error_bodies() {
    let app = App::new();
    for uri in [
        "/nope",
        "/api/v1",
        "/api/v1/jobs/",
        "/api/v2/jobs",
        "/api/v1/calibrate/x/y/z",
    ] {
        let r = app.get(uri).await;
        r.assert_error(404);
        assert!(r.detail().contains(uri), "{}", r.body);
        assert_common_headers(&r);
    }
    for (method, uri, allow) in [
        ("GET", "/api/v1/calibrate/job_000000000000", "DELETE"),
        ("PUT", "/api/v1/jobs", "GET,HEAD"),
        ("POST", "/api/v1/jobs/health", "GET,HEAD"),
        ("GET", "/api/v1/calibrate/async", "POST"),
        ("PATCH", "/", "GET,HEAD"),
    ] {
        let r = app.send(method.parse().unwrap(), uri, None).await;
        r.assert_error(405);
        assert!(r.detail().contains(method), "{}", r.body);
        assert_eq!(r.headers["allow"], allow, "{method} {uri}");
        assert_common_headers(&r);
    }
}

fn auth_config() -> Config {
    Config {
        api_keys: Some(vec!["k-one".into(), "k-two".into()]),
        ..Config::default()
    }
}

#[tokio::test]
async fn api_keys_are_required_when_configured() {
    let app = App::with_config(auth_config());
    let r = app.get("/api/v1/jobs").await;
    r.assert_error(401);
    assert!(r.detail().contains("X-API-Key"));
    assert_common_headers(&r);
    let r = app
        .request(
            raw("GET", "/api/v1/jobs")
                .header("x-api-key", "wrong")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    r.assert_error(403);
    // Unknown routes are not a way around it.
    app.get("/nope").await.assert_error(401);

    let r = app
        .request(
            raw("GET", "/api/v1/jobs")
                .header("x-api-key", "k-two")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        app.get("/api/v1/jobs?api_key=k-one").await.status,
        StatusCode::OK
    );
    app.get("/api/v1/jobs?api_key=k-on").await.assert_error(403);
    // `/` (exact) stays public; nothing else does.
    assert_eq!(app.get("/").await.status, StatusCode::OK);
    app.get("/api/v1/openapi.json").await.assert_error(401);
    let r = app
        .request(
            raw("POST", "/api/v1/calibrate/async")
                .header("x-api-key", "k-one")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after() {
    let app = App::with_config(Config {
        rate_limit_per_minute: 2,
        ..Config::default()
    });
    let from = |ip: &str| {
        raw("GET", "/api/v1/jobs/health")
            .header("x-forwarded-for", ip)
            .body(Body::empty())
            .unwrap()
    };
    let first = app.request(from("10.0.0.1")).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.headers["x-ratelimit-limit"], "2");
    assert_eq!(first.headers["x-ratelimit-remaining"], "1");
    let reset: u64 = first.headers["x-ratelimit-reset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(reset > Utc::now().timestamp() as u64 - 1);
    assert_eq!(app.request(from("10.0.0.1")).await.status, StatusCode::OK);
    let third = app.request(from("10.0.0.1")).await;
    third.assert_error(429);
    assert_common_headers(&third);
    let retry: u64 = third.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(third.headers["x-ratelimit-remaining"], "0");
    // Another client has its own window; a spoofed leading X-Forwarded-For entry does not
    // make a new client (the gateway appends the real address last).
    assert_eq!(app.request(from("10.0.0.2")).await.status, StatusCode::OK);
    app.request(from("1.2.3.4, 10.0.0.1"))
        .await
        .assert_error(429);
}

#[tokio::test]
async fn the_rate_limit_counts_per_valid_api_key() {
    let app = App::with_config(Config {
        rate_limit_per_minute: 1,
        ..auth_config()
    });
    let with_key = |key: &str| {
        raw("GET", "/api/v1/cache/stats")
            .header("x-api-key", key)
            .header("x-forwarded-for", "10.0.0.9")
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(app.request(with_key("k-one")).await.status, StatusCode::OK);
    app.request(with_key("k-one")).await.assert_error(429);
    assert_eq!(app.request(with_key("k-two")).await.status, StatusCode::OK);
    // Bad keys count against the address: a new bad key does not buy a new window.
    app.request(with_key("bad-1")).await.assert_error(403);
    app.request(with_key("bad-2")).await.assert_error(429);
}

#[tokio::test]
async fn cors_preflight_and_headers() {
    let app = App::new();
    let r = app
        .request(
            raw("OPTIONS", "/api/v1/calibrate/async")
                .header("origin", "https://example.org")
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "content-type, x-api-key")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.status);
    assert_eq!(r.headers["access-control-allow-origin"], "*");
    assert_eq!(r.headers["access-control-allow-headers"], "*");
    assert_eq!(r.headers["access-control-allow-methods"], "*");
    assert_common_headers(&r);
    let r = app
        .request(
            raw("GET", "/api/v1/jobs")
                .header("origin", "https://example.org")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.headers["access-control-allow-origin"], "*");
    let exposed = r.headers["access-control-expose-headers"].to_str().unwrap();
    assert!(exposed.contains("x-request-id") && exposed.contains("retry-after"));

    // With a list of origins only those are allowed; preflights pass even with keys on.
    let app = App::with_config(Config {
        cors_origins: vec!["https://a.example".into()],
        ..auth_config()
    });
    let preflight = |origin: &str| {
        raw("OPTIONS", "/api/v1/jobs")
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "x-api-key")
            .body(Body::empty())
            .unwrap()
    };
    let r = app.request(preflight("https://a.example")).await;
    assert!(r.status.is_success());
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://a.example"
    );
    assert_eq!(r.headers["access-control-allow-headers"], "x-api-key");
    let r = app.request(preflight("https://b.example")).await;
    assert!(r.headers.get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn every_response_has_security_headers_and_a_request_id() {
    let app = App::new();
    let ok = app.get("/").await;
    assert_common_headers(&ok);
    let created = app.post("/api/v1/calibrate/async", "{}").await;
    assert_common_headers(&created);
    assert_ne!(ok.headers["x-request-id"], created.headers["x-request-id"]);
    let r = app
        .request(
            raw("GET", "/")
                .header("x-request-id", "trace-42")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.headers["x-request-id"], "trace-42");
    let r = app
        .request(
            raw("GET", "/")
                .header("x-request-id", "has spaces")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_ne!(r.headers["x-request-id"], "has spaces");
}

/// Ports that fail: panicking, or answering "unavailable".
struct Broken {
    panic: bool,
}

impl Broken {
    fn fail<T>(&self) -> StoreResult<T> {
        if self.panic {
            panic!("secret internal detail /var/db");
        }
        Err(StoreError::Unavailable("database is locked".into()))
    }
}

#[async_trait]
impl JobStore for Broken {
    async fn insert_job(&self, _: &Job) -> StoreResult<()> {
        self.fail()
    }
    async fn get_job(&self, _: &str, _: DateTime<Utc>) -> StoreResult<Option<Job>> {
        self.fail()
    }
    async fn update_job(&self, _: &Job) -> StoreResult<Write> {
        self.fail()
    }
    async fn delete_job(&self, _: &str) -> StoreResult<u64> {
        self.fail()
    }
    async fn list_jobs(
        &self,
        _: &JobFilter,
        _: u64,
        _: u64,
        _: DateTime<Utc>,
    ) -> StoreResult<(Vec<Job>, u64)> {
        self.fail()
    }
    async fn jobs_by_status(
        &self,
        _: &[JobStatus],
        _: Option<DateTime<Utc>>,
        _: DateTime<Utc>,
    ) -> StoreResult<Vec<Job>> {
        self.fail()
    }
    async fn append_log(&self, _: &str, _: &LogEntry, _: u64) -> StoreResult<()> {
        self.fail()
    }
    async fn logs(
        &self,
        _: &str,
        _: Option<LogLevel>,
        _: u64,
        _: u64,
    ) -> StoreResult<Vec<LogEntry>> {
        self.fail()
    }
    async fn insert_batch(&self, _: &Batch) -> StoreResult<()> {
        self.fail()
    }
    async fn get_batch(&self, _: &str, _: DateTime<Utc>) -> StoreResult<Option<Batch>> {
        self.fail()
    }
    async fn update_batch(&self, _: &Batch) -> StoreResult<Write> {
        self.fail()
    }
    async fn put_cache_entry(&self, _: &CacheEntry) -> StoreResult<Write> {
        self.fail()
    }
    async fn get_cache_entry(&self, _: &str, _: DateTime<Utc>) -> StoreResult<Option<CacheEntry>> {
        self.fail()
    }
    async fn cache_entries(&self, _: DateTime<Utc>) -> StoreResult<Vec<CacheEntry>> {
        self.fail()
    }
    async fn delete_cache_entry(&self, _: &str) -> StoreResult<()> {
        self.fail()
    }
    async fn count_cache(&self, _: CacheCounter) -> StoreResult<()> {
        self.fail()
    }
    async fn cache_counters(&self) -> StoreResult<CacheCounters> {
        self.fail()
    }
    async fn ping(&self) -> StoreResult<()> {
        self.fail()
    }
}

#[async_trait]
impl JobQueue for Broken {
    async fn send(&self, _: &str, _: u8, _: Duration) -> StoreResult<()> {
        self.fail()
    }
    async fn receive(&self, _: u32, _: Duration) -> StoreResult<Vec<Delivery>> {
        self.fail()
    }
    async fn ack(&self, _: &str) -> StoreResult<()> {
        self.fail()
    }
    async fn release(&self, _: &str, _: Duration) -> StoreResult<()> {
        self.fail()
    }
    async fn depth(&self) -> StoreResult<u64> {
        self.fail()
    }
}

#[async_trait]
impl ResultStore for Broken {
    async fn put_if_absent(&self, _: &str, _: &[u8]) -> StoreResult<()> {
        self.fail()
    }
    async fn get(&self, _: &str) -> StoreResult<Option<Vec<u8>>> {
        self.fail()
    }
    async fn delete(&self, _: &str) -> StoreResult<()> {
        self.fail()
    }
}

fn broken_app(panic: bool) -> App {
    let broken = std::sync::Arc::new(Broken { panic });
    let ports = Ports {
        store: broken.clone(),
        queue: broken.clone(),
        results: broken,
        clock: std::sync::Arc::new(vacal_core::ports::SystemClock),
        ids: std::sync::Arc::new(vacal_core::ports::RandomIds),
    };
    App::with_ports(ports, Config::default(), tempfile::tempdir().unwrap())
}

#[tokio::test]
async fn a_panic_is_a_500_with_a_request_id_and_no_internals() {
    let app = broken_app(true);
    for (method, uri) in [
        (Method::GET, "/api/v1/jobs"),
        (Method::GET, "/api/v1/calibrate/job_000000000000/status"),
        (Method::POST, "/api/v1/calibrate/async"),
    ] {
        let body = (method == Method::POST).then_some("{}");
        let r = app.send(method, uri, body).await;
        r.assert_error(500);
        assert_common_headers(&r);
        let id = r.headers["x-request-id"].to_str().unwrap();
        assert!(r.detail().contains(id), "{}", r.body);
        let text = String::from_utf8_lossy(&r.raw);
        assert!(
            !text.contains("secret") && !text.contains("panicked"),
            "{text}"
        );
    }
    // The service keeps answering after a panic.
    assert_eq!(app.get("/").await.status, StatusCode::OK);
}

#[tokio::test]
async fn storage_outages_are_503_on_health_and_500_elsewhere() {
    let app = broken_app(false);
    let r = app.get("/api/v1/jobs/health").await;
    r.assert_error(503);
    assert_eq!(r.body["status"], "unhealthy");
    assert!(r.body["error"]
        .as_str()
        .unwrap()
        .contains("database is locked"));
    assert!(r.detail().contains("unavailable"), "{}", r.body);

    let r = app.get("/api/v1/cache/stats").await;
    r.assert_error(500);
    let id = r.headers["x-request-id"].to_str().unwrap();
    assert_eq!(
        r.detail(),
        format!("Internal server error (request id {id})")
    );
    assert!(!String::from_utf8_lossy(&r.raw).contains("locked"));
    // Input errors stay input errors even when storage is down.
    app.post("/api/v1/calibrate/async", "[]")
        .await
        .assert_error(400);
    app.post("/api/v1/calibrate/async", r#"{"va_data": {}}"#)
        .await
        .assert_error(422);
}
