//! The API Lambda's handling of API Gateway HTTP API (payload v2) events: each event is
//! turned into a request by `lambda_http` as in production and answered by the router,
//! here over the local adapters (the AWS ones are covered by the conformance suite and the
//! end-to-end test).

use std::sync::Arc;

use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use vacal_core::{Config, JobService};

/// An event of `events/` (shared with `cargo lambda invoke` and `sam local invoke`).
macro_rules! shipped {
    ($name:literal) => {
        serde_json::from_str::<Value>(include_str!(concat!("../../../events/", $name)))
            .expect(concat!($name, " is JSON"))
    };
}

/// The event with the example job or batch ID of `events/` replaced by a real one.
fn with_id(event: &Value, example: &str, id: &str) -> Value {
    serde_json::from_str(&event.to_string().replace(example, id)).unwrap()
}

struct Api {
    _dir: tempfile::TempDir,
    router: axum::Router,
}

impl Api {
    fn new() -> Api {
        let dir = tempfile::tempdir().unwrap();
        let ports = vacal_local::ports(dir.path()).unwrap();
        let service = Arc::new(JobService::new(ports, Config::default()));
        Api {
            _dir: dir,
            router: vacal_http::router(service),
        }
    }

    /// Sends one event as Lambda would deliver it; returns status and JSON body.
    async fn send(&self, event: &Value) -> (u16, Value) {
        let request = lambda_http::request::from_str(&event.to_string())
            .unwrap_or_else(|e| panic!("not an API Gateway event: {e}\n{event:#}"));
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "response is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        (status, body)
    }

    /// A request without a body, with the usual headers.
    async fn call(&self, method: &str, path: &str) -> (u16, Value) {
        self.send(&event(method, path, json_headers(), None, false))
            .await
    }
}

/// An HTTP API payload v2 event, as API Gateway (or a function URL) sends it.
fn event(method: &str, path: &str, headers: Value, body: Option<&str>, base64: bool) -> Value {
    let (raw_path, raw_query) = path.split_once('?').unwrap_or((path, ""));
    let body = body.map(|b| {
        if base64 {
            base64_encode(b.as_bytes())
        } else {
            b.to_string()
        }
    });
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "vacalapi01",
            "domainName": "vacalapi01.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "vacalapi01",
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "curl/8.5.0"
            },
            "requestId": "JKJaXmPLvHcESHA=",
            "routeKey": "$default",
            "stage": "$default",
            "time": "15/Jan/2024:14:25:00 +0000",
            "timeEpoch": 1705328700000u64
        },
        "body": body,
        "isBase64Encoded": base64
    })
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn json_headers() -> Value {
    json!({"content-type": "application/json", "host": "vacalapi01.execute-api.us-east-1.amazonaws.com"})
}

/// The events the other tooling (`events/api-*.json`, used by `sam local invoke` and
/// `cargo lambda invoke`) ships, when present; each must be accepted and answered with the
/// error body on failure, never a 500.
fn shipped_events() -> Vec<(String, Value)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events");
    let entries = std::fs::read_dir(&dir).expect("the events/ folder");
    let mut events: Vec<(String, Value)> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("api-") && n.ends_with(".json"))
        })
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), value)
        })
        .collect();
    events.sort_by(|a, b| a.0.cmp(&b.0));
    events
}

#[tokio::test]
async fn create_with_a_base64_body_and_no_content_type_then_status() {
    let api = Api::new();
    let create = shipped!("api-create-job-base64.json");
    assert_eq!(create["isBase64Encoded"], true);
    assert!(create["headers"].get("content-type").is_none());
    let (status, created) = api.send(&create).await;
    assert_eq!(status, 200, "{created}");
    let job_id = created["job_id"].as_str().expect("a job_id").to_string();
    assert!(job_id.starts_with("job_") && job_id.len() == 16, "{job_id}");
    assert_eq!(created["status"], "created");

    let status_event = with_id(
        &shipped!("api-job-status.json"),
        "job_3f9a0c1b2d4e",
        &job_id,
    );
    let (status, job) = api.send(&status_event).await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["job_id"], job_id.as_str());
    assert_eq!(job["status"], "pending");

    // The same job through the plain-body event: equal requests, equal cache keys.
    let (status, plain) = api.send(&shipped!("api-create-job.json")).await;
    assert_eq!(status, 200, "{plain}");
    let (_, listed) = api.send(&shipped!("api-list-jobs.json")).await;
    assert!(listed.get("jobs").is_some(), "{listed}");

    let cancel = with_id(
        &shipped!("api-cancel-job.json"),
        "job_3f9a0c1b2d4e",
        &job_id,
    );
    let (status, cancelled) = api.send(&cancel).await;
    assert_eq!(status, 200, "{cancelled}");
    let (_, job) = api.send(&status_event).await;
    assert_eq!(job["status"], "cancelled", "{job}");
}

#[tokio::test]
async fn an_uploaded_file_arrives_base64_encoded_and_is_read() {
    let api = Api::new();
    let event = shipped!("api-validate-upload.json");
    assert_eq!(event["isBase64Encoded"], true);
    let (status, preview) = api.send(&event).await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["valid"], true, "{preview}");
    let eava = &preview["algorithms"]["eava"];
    assert_eq!(eava["form"], "long");
    assert_eq!(eava["deaths"], 3);
    assert_eq!(eava["unspecified_dropped"], 1);
    assert_eq!(eava["counts"]["diarrhea"], 1);
    let (status, reference) = api.send(&shipped!("api-reference-cause-map.json")).await;
    assert_eq!(status, 200);
    assert_eq!(reference["labels"]["diarrhea/dysentery"], "diarrhea");
}

#[tokio::test]
async fn shipped_error_events_are_clear_4xx() {
    let api = Api::new();
    for (event, want) in [
        (shipped!("api-create-job-invalid-json.json"), 400),
        (shipped!("api-unknown-route.json"), 404),
        (shipped!("api-job-result.json"), 404),
    ] {
        let (status, body) = api.send(&event).await;
        assert_eq!(status, want, "{body}");
        assert_eq!(body["status_code"], want, "{body}");
    }
}

#[tokio::test]
async fn a_plain_json_body_with_content_type_is_accepted() {
    let api = Api::new();
    let (status, created) = api
        .send(&event(
            "POST",
            "/api/v1/calibrate/async",
            json_headers(),
            Some("{}"),
            false,
        ))
        .await;
    assert_eq!(status, 200, "{created}");
    let (status, listed) = api.call("GET", "/api/v1/jobs?status=pending&limit=5").await;
    assert_eq!(status, 200, "{listed}");
    let ids: Vec<&str> = listed["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(|j| j["job_id"].as_str())
        .collect();
    assert_eq!(ids, vec![created["job_id"].as_str().unwrap()]);
}

#[tokio::test]
async fn bad_input_is_a_clear_4xx_with_the_error_body() {
    // (A body flagged base64 that is not base64 never arrives: API Gateway encodes bodies
    // itself, and lambda_http panics on one before the router sees it.)
    let api = Api::new();
    let cases = [
        // (what, event, expected status)
        (
            "base64 body that is not JSON",
            event(
                "POST",
                "/api/v1/calibrate/async",
                json!({}),
                Some("{not json"),
                true,
            ),
            400,
        ),
        (
            "empty body",
            event(
                "POST",
                "/api/v1/calibrate/async",
                json_headers(),
                None,
                false,
            ),
            400,
        ),
        (
            "a rule violated",
            event(
                "POST",
                "/api/v1/calibrate/async",
                json_headers(),
                Some(r#"{"priority": 11}"#),
                false,
            ),
            422,
        ),
        (
            "unknown job",
            event(
                "GET",
                "/api/v1/calibrate/job_000000000000/status",
                json_headers(),
                None,
                false,
            ),
            404,
        ),
        (
            "unknown route",
            event("GET", "/api/v2/nothing", json_headers(), None, false),
            404,
        ),
        (
            "wrong method",
            event("PUT", "/api/v1/jobs/health", json_headers(), None, false),
            405,
        ),
    ];
    for (what, ev, want) in cases {
        let (status, body) = api.send(&ev).await;
        assert_eq!(status, want, "{what}: {body}");
        assert_eq!(body["status_code"], want, "{what}: {body}");
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{what}: {body}"
        );
    }
}

#[tokio::test]
async fn batch_cancel_and_cache_routes_work_through_events() {
    let api = Api::new();
    let batch = r#"{"jobs": [{"country": "Mozambique"}, {"country": "Kenya", "age_group": "child"}], "parallel_limit": 1}"#;
    let (status, created) = api
        .send(&event(
            "POST",
            "/api/v1/calibrate/batch",
            json_headers(),
            Some(batch),
            true,
        ))
        .await;
    assert_eq!(status, 200, "{created}");
    let batch_id = created["batch_id"].as_str().expect("batch_id").to_string();
    let jobs: Vec<String> = created["job_ids"]
        .as_array()
        .expect("job_ids")
        .iter()
        .map(|j| j.as_str().unwrap().to_string())
        .collect();
    assert_eq!(jobs.len(), 2);

    let (status, cancelled) = api
        .call("DELETE", &format!("/api/v1/calibrate/{}", jobs[1]))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    let (status, again) = api
        .call("DELETE", &format!("/api/v1/calibrate/{}", jobs[1]))
        .await;
    assert_eq!(status, 409, "cancelling a cancelled job: {again}");

    let (status, batch_status) = api
        .call("GET", &format!("/api/v1/calibrate/batch/{batch_id}/status"))
        .await;
    assert_eq!(status, 200, "{batch_status}");
    assert_eq!(batch_status["batch_id"], batch_id.as_str());

    let (status, stats) = api.call("GET", "/api/v1/cache/stats").await;
    assert_eq!(status, 200, "{stats}");
    let (status, refused) = api.call("DELETE", "/api/v1/cache/clear").await;
    assert_eq!(status, 400, "clearing without confirm: {refused}");
}

#[tokio::test]
async fn shipped_api_events_are_answered_without_a_server_error() {
    let api = Api::new();
    let events = shipped_events();
    assert!(events.len() >= 16, "an event per route: {}", events.len());
    for (name, ev) in events {
        let request = lambda_http::request::from_str(&ev.to_string());
        let request = request.unwrap_or_else(|e| panic!("{name}: not an API Gateway event: {e}"));
        let response = api.router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        assert!(status < 500, "{name}: status {status}");
    }
}
