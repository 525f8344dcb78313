//! The HTTP API of `vacal serve`, endpoint by endpoint, as api-reference.md documents it
//! (the scenarios are in `vacal_e2e::api_suite`).
//!
//! With `VACAL_API_URL` set (e.g. the URL `tests/aws/lambda_stack.sh` prints), the tests
//! that need only a generic server run against that API instead of starting `vacal serve`,
//! one at a time, each after deleting every job and cached result there; the tests that
//! need a particular server configuration skip themselves.

use std::time::Duration;

use serde_json::{json, Value};
use vacal_e2e::api_suite::{self, quick};
use vacal_e2e::{assert_error_body, external_api_url, Api, Remote, Server};

/// A job that runs for many seconds unless cancelled.
fn slow() -> Value {
    json!({
        "va_data": {"eava": [44, 168, 267, 268, 29, 164]},
        "mcmc": {"sampler": "gibbs", "n_mcmc": 4000, "n_burn": 0, "n_thin": 2000},
    })
}

fn server(workers: usize) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (Server::start(dir.path(), workers, &[]), dir)
}

/// Runs a scenario against the API at `VACAL_API_URL`, or else against a `vacal serve`
/// with `workers` workers started for it.
fn run(workers: usize, scenario: fn(&dyn Api)) {
    match external_api_url() {
        Some(url) => scenario(&Remote::exclusive(&url)),
        None => {
            let (s, _dir) = server(workers);
            scenario(&s)
        }
    }
}

/// Whether this test must skip: it starts a server of its own configuration, which an
/// API at `VACAL_API_URL` does not have.
fn needs_own_server(why: &str) -> bool {
    match external_api_url() {
        Some(url) => {
            eprintln!("skipped against {url}: {why}");
            true
        }
        None => false,
    }
}

#[test]
fn create_status_result_with_the_example_data() {
    run(2, api_suite::create_status_result_with_the_example_data);
}

#[test]
fn result_files_agree_with_the_result() {
    run(2, api_suite::result_files_agree_with_the_result);
}

#[test]
fn files_upload_like_json_bodies() {
    run(2, api_suite::files_upload_like_json_bodies);
}

#[test]
fn reference_data_names_what_requests_accept() {
    run(1, api_suite::reference_data_names_what_requests_accept);
}

#[test]
fn every_bad_input_gets_a_4xx_with_the_error_body() {
    run(1, api_suite::every_bad_input_gets_a_4xx_with_the_error_body);
}

#[test]
fn the_cache_serves_a_repeated_request_without_running_the_engine() {
    run(
        1,
        api_suite::the_cache_serves_a_repeated_request_without_running_the_engine,
    );
}

#[test]
fn batches_respect_the_parallel_limit_and_report_counts() {
    run(
        3,
        api_suite::batches_respect_the_parallel_limit_and_report_counts,
    );
}

#[test]
fn listing_deleting_retrying_health_and_metrics() {
    run(2, api_suite::listing_deleting_retrying_health_and_metrics);
}
#[test]
fn a_body_over_max_request_bytes_is_413() {
    if needs_own_server("needs MAX_REQUEST_BYTES=4096") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), 1, &[("MAX_REQUEST_BYTES", "4096")]);
    let big = format!(
        r#"{{"va_data": {{"eava": [{}]}}}}"#,
        vec!["0"; 4000].join(",")
    );
    let (status, v, _) = s.call(
        "POST",
        "/api/v1/calibrate/async",
        Some(&big),
        &[("content-type", "application/json")],
    );
    assert_eq!(status, 413, "{v}");
    assert_error_body(status, &v);
}

#[test]
fn cancel_pending_and_running_jobs_and_refuse_finished_ones() {
    if needs_own_server("needs a server with exactly one worker") {
        return;
    }
    let (s, _dir) = server(1);
    let running = s.create(&slow());
    let pending = s.create(&quick(json!({})));
    // The single worker is busy with the slow job, so the second one waits.
    std::thread::sleep(Duration::from_millis(500));
    let (status, v) = s.get(&format!("/api/v1/calibrate/{running}/status"));
    assert_eq!(status, 200);
    assert_eq!(v["status"], "running", "{v}");
    let (status, v) = s.get(&format!("/api/v1/calibrate/{pending}/result"));
    assert_eq!(status, 400);
    assert!(v["detail"]
        .as_str()
        .unwrap()
        .contains("is not completed (status: pending)"));

    for id in [&pending, &running] {
        let (status, v) = s.delete(&format!("/api/v1/calibrate/{id}"));
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["status"], "cancelled");
        let (status, v) = s.delete(&format!("/api/v1/calibrate/{id}"));
        assert_eq!(status, 409);
        assert!(v["detail"].as_str().unwrap().contains("already cancelled"));
    }
    // The running job's worker stops and picks up new work; the status stays cancelled.
    let next = s.create(&quick(json!({})));
    let done = s.wait(&next, Duration::from_secs(60));
    assert_eq!(done["status"], "success");
    for id in [&pending, &running] {
        let (_, v) = s.get(&format!("/api/v1/calibrate/{id}/status"));
        assert_eq!(v["status"], "cancelled");
        assert!(v["metadata"]["completed_at"].is_string());
        assert!(v["logs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["message"] == "Job cancelled by user"));
    }
    let (status, _) = s.delete(&format!("/api/v1/calibrate/{next}"));
    assert_eq!(status, 409);
}
