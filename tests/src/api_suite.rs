//! The scenarios of the HTTP API suite (tests/tests/api.rs), endpoint by endpoint, as
//! api-reference.md documents them. Each takes the API under test, so the same scenario
//! runs against `vacal serve`, an API at `VACAL_API_URL` and the Lambda stack
//! (tests/tests/aws_lambda.rs).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{assert_error_body, Api};

/// A quick calibration (a few hundred draws) of the neonatal EAVA example counts.
pub fn quick(extra: Value) -> Value {
    let mut body = json!({
        "va_data": {"eava": [44, 168, 267, 268, 29, 164]},
        "mcmc": {"n_mcmc": 400, "n_burn": 400},
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    body
}

pub fn create_status_result_with_the_example_data(s: &dyn Api) {
    let (status, created) = s.post("/api/v1/calibrate/async", &json!({}));
    assert_eq!(status, 200);
    assert_eq!(created["status"], "created");
    let id = created["job_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("job_") && id.len() == 16, "{id}");
    let done = s.wait(&id, Duration::from_secs(60));
    assert_eq!(done["status"], "success", "{done}");
    assert_eq!(done["progress"]["current_step"], 5);
    assert_eq!(done["progress"]["step_name"], "Completed");
    assert_eq!(done["progress"]["progress_percentage"], 100.0);
    assert_eq!(done["metadata"]["job_type"], "calibration");
    assert_eq!(done["result_summary"]["algorithms_processed"], 1);
    assert!(done["error_details"].is_null());
    let logs = done["logs"].as_array().unwrap();
    assert!(logs.len() >= 3);
    let times: Vec<&str> = logs
        .iter()
        .map(|l| l["timestamp"].as_str().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "logs newest first: {times:?}"
    );
    assert_eq!(
        logs.last().unwrap()["message"],
        "Job created with priority 5"
    );

    let (status, result) = s.get(&format!("/api/v1/calibrate/{id}/result"));
    assert_eq!(status, 200);
    assert_eq!(result["status"], "success");
    assert!(result["cache_info"].is_null());
    let r = &result["result"];
    assert_eq!(r["causes"][0], "congenital_malformation");
    assert_eq!(r["age_group"], "neonate");
    assert_eq!(r["country"], "Mozambique");
    // The neonatal InSilicoVA example's uncalibrated CSMF (§5.5).
    let uncal: Vec<f64> = serde_json::from_value(r["uncalibrated"]["insilicova"].clone()).unwrap();
    assert!((uncal[1] - 148.0 / 1190.0).abs() < 1e-12);
    let c = &r["calibrated"]["insilicova"];
    for j in 0..6 {
        let (lo, m, hi) = (
            c["lower_ci"][j].as_f64().unwrap(),
            c["mean"][j].as_f64().unwrap(),
            c["upper_ci"][j].as_f64().unwrap(),
        );
        assert!(lo <= m && m <= hi);
    }
    assert_eq!(
        c["mean"][4], r["uncalibrated"]["insilicova"][4],
        "other is not calibrated"
    );
    assert!(r["diagnostics"]["insilicova"]["max_rhat"].as_f64().unwrap() < 1.05);
    // vacalibration 2.3.1's rules by default, and a path correction that did not stall.
    assert_eq!(r["settings"]["rules"], "2.3.1");
    let pc = &r["path_correction"]["insilicova"];
    assert_eq!(pc["lambda"], r["lambda"]["insilicova"]);
    assert_eq!(pc["stalled"], false);
    assert_eq!(r["warnings"], serde_json::json!([]));
}

pub fn every_bad_input_gets_a_4xx_with_the_error_body(s: &dyn Api) {
    let json_header = [("content-type", "application/json")];
    // (method, path, body, headers, expected status)
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        &'a [(&'a str, &'a str)],
        u16,
    );
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/api/v1/calibrate/async",
            Some("{not json"),
            &json_header,
            400,
        ),
        (
            "POST",
            "/api/v1/calibrate/async",
            Some(""),
            &json_header,
            400,
        ),
        (
            "POST",
            "/api/v1/calibrate/async",
            Some("[1,2]"),
            &json_header,
            400,
        ),
        (
            "POST",
            "/api/v1/calibrate/async",
            Some(r#"{"va_data": {}}"#),
            &json_header,
            422,
        ),
        (
            "POST",
            "/api/v1/calibrate/async",
            Some(r#"{"rules": "2.4"}"#),
            &json_header,
            422,
        ),
        (
            "POST",
            "/api/v1/calibrate/async",
            Some(r#"{"age_group": "adult"}"#),
            &json_header,
            422,
        ),
        (
            "POST",
            "/api/v1/calibrate/async",
            Some(r#"{"priority": 11}"#),
            &json_header,
            422,
        ),
        (
            "POST",
            "/api/v1/calibrate/async",
            Some(r#"{"priority": "high"}"#),
            &json_header,
            422,
        ),
        (
            "POST",
            "/api/v1/calibrate/async",
            Some(r#"{"va_data": {"eava": [{"id": "1", "cause": "Dragon bite"}]}}"#),
            &json_header,
            422,
        ),
        (
            "POST",
            "/api/v1/calibrate/async",
            Some(r#"{"va_data": {"myalgo": "use_example"}}"#),
            &json_header,
            422,
        ),
        (
            "POST",
            "/api/v1/calibrate/async",
            Some("{}"),
            &[("content-type", "text/plain")],
            415,
        ),
        ("GET", "/api/v1/nothing/here", None, &[], 404),
        ("GET", "/api/v1/calibrate/async", None, &[], 405),
        (
            "GET",
            "/api/v1/calibrate/job_000000000000/status",
            None,
            &[],
            404,
        ),
        ("GET", "/api/v1/calibrate/not-an-id/result", None, &[], 404),
        (
            "DELETE",
            "/api/v1/calibrate/job_000000000000",
            None,
            &[],
            404,
        ),
        (
            "GET",
            "/api/v1/calibrate/job_000000000000/status?log_limit=0",
            None,
            &[],
            422,
        ),
        (
            "GET",
            "/api/v1/calibrate/batch/batch_000000000000/status",
            None,
            &[],
            404,
        ),
        ("GET", "/api/v1/jobs?page_size=500", None, &[], 422),
        (
            "GET",
            "/api/v1/jobs?created_after=yesterday",
            None,
            &[],
            422,
        ),
        ("GET", "/api/v1/jobs/metrics?time_range=2h", None, &[], 422),
        ("DELETE", "/api/v1/cache/clear", None, &[], 400),
        (
            "DELETE",
            "/api/v1/cache/clear?confirm=maybe",
            None,
            &[],
            422,
        ),
        ("DELETE", "/api/v1/jobs/clear/all", None, &[], 400),
        (
            "POST",
            "/api/v1/calibrate/batch",
            Some(r#"{"jobs": []}"#),
            &json_header,
            422,
        ),
    ];
    for (method, path, body, headers, expected) in cases {
        let (status, v, _) = s.call(method, path, body, headers);
        assert_eq!(status, expected, "{method} {path} {body:?}: {v}");
        assert_error_body(status, &v);
    }
    let (status, v) = s.post("/api/v1/calibrate/async", &json!({"va_data": {}}));
    assert_eq!(status, 422);
    assert_eq!(v["errors"][0]["field"], "va_data");
    // A missing content type is accepted (API Gateway may drop it).
    let (status, v, _) = s.call(
        "POST",
        "/api/v1/calibrate/async",
        Some(&quick(json!({})).to_string()),
        &[],
    );
    assert_eq!(status, 200, "{v}");
}

/// Whether the job's log shows `message` within 5 s. A job's closing entry is written
/// right after the state change that ends the job, by the worker that ended it (so it is
/// written exactly once), hence a poller may see the final status one write before the
/// entry; on DynamoDB that write is a network round trip.
fn eventually_logged(s: &dyn Api, job_id: &str, message: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, status) = s.get(&format!("/api/v1/calibrate/{job_id}/status"));
        let logs = status["logs"].as_array().cloned().unwrap_or_default();
        if logs.iter().any(|l| l["message"] == message) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn the_cache_serves_a_repeated_request_without_running_the_engine(s: &dyn Api) {
    let body = quick(json!({"use_cache": true}));
    let first = s.create(&body);
    assert_eq!(s.wait(&first, Duration::from_secs(60))["status"], "success");
    let second = s.create(&quick(json!({"use_cache": true, "priority": 9})));
    let done = s.wait(&second, Duration::from_secs(60));
    assert_eq!(done["status"], "success");
    assert_eq!(done["progress"]["step_name"], "Completed (cached)");
    assert!(
        eventually_logged(s, &second, "Using cached result"),
        "no cache log: {done}"
    );
    let (_, r1) = s.get(&format!("/api/v1/calibrate/{first}/result"));
    let (_, r2) = s.get(&format!("/api/v1/calibrate/{second}/result"));
    assert!(r1["cache_info"].is_null());
    assert_eq!(r2["cache_info"]["source_job_id"], first.as_str());
    assert_eq!(r1["result"]["calibrated"], r2["result"]["calibrated"]);
    let (_, stats) = s.get("/api/v1/cache/stats");
    assert_eq!(stats["total_cached_results"], 1);
    assert_eq!(stats["cache_hit_rate"], 50.0);
    let (status, cleared) = s.delete("/api/v1/cache/clear?confirm=true&age_group=child");
    assert_eq!(status, 200);
    assert_eq!(cleared["cleared_results"], 0);
    let (_, cleared) = s.delete("/api/v1/cache/clear?confirm=true&country=mozambique");
    assert_eq!(cleared["cleared_results"], 1);
    let (_, stats) = s.get("/api/v1/cache/stats");
    assert_eq!(stats["total_cached_results"], 0);
}

pub fn batches_respect_the_parallel_limit_and_report_counts(s: &dyn Api) {
    let jobs: Vec<Value> = (0..4).map(|i| quick(json!({"priority": 1 + i}))).collect();
    let (status, v) = s.post(
        "/api/v1/calibrate/batch",
        &json!({"jobs": jobs, "batch_name": "four", "parallel_limit": 1}),
    );
    assert_eq!(status, 200, "{v}");
    let batch_id = v["batch_id"].as_str().unwrap().to_string();
    let ids: Vec<String> = serde_json::from_value(v["job_ids"].clone()).unwrap();
    assert_eq!(ids.len(), 4);
    assert_eq!(v["batch_metadata"]["parallel_limit"], 1);
    let mut max_running = 0;
    loop {
        let (_, b) = s.get(&format!("/api/v1/calibrate/batch/{batch_id}/status"));
        let counts: Vec<u64> = [
            "completed_jobs",
            "failed_jobs",
            "running_jobs",
            "pending_jobs",
            "cancelled_jobs",
        ]
        .iter()
        .map(|k| b[*k].as_u64().unwrap())
        .collect();
        assert_eq!(counts.iter().sum::<u64>(), 4, "{b}");
        max_running = max_running.max(b["running_jobs"].as_u64().unwrap());
        if b["batch_status"] == "completed" {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        max_running <= 1,
        "parallel_limit 1 was exceeded: {max_running}"
    );
    // Higher priority members started first.
    let started: Vec<String> = ids
        .iter()
        .map(|id| {
            s.get(&format!("/api/v1/calibrate/{id}/status")).1["metadata"]["started_at"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(
        started[3] < started[0],
        "priority 4 before priority 1: {started:?}"
    );
    let (_, first) = s.get(&format!("/api/v1/calibrate/{}/status", ids[0]));
    assert_eq!(first["metadata"]["batch_id"], batch_id.as_str());
    assert_eq!(first["metadata"]["job_type"], "batch_calibration");

    let (status, v) = s.post(
        "/api/v1/calibrate/batch",
        &json!({"jobs": [quick(json!({})), {"age_group": "adult"}]}),
    );
    assert_eq!(status, 422);
    assert!(
        v["detail"].as_str().unwrap().contains("jobs[1].age_group"),
        "{v}"
    );
}

pub fn listing_deleting_retrying_health_and_metrics(s: &dyn Api) {
    let a = s.create(&quick(json!({})));
    let b = s.create(&quick(
        json!({"va_data": {"interva": "use_example"}, "age_group": "child", "country": "Kenya"}),
    ));
    s.wait(&a, Duration::from_secs(60));
    s.wait(&b, Duration::from_secs(60));
    let (status, list) = s.get("/api/v1/jobs?page_size=1");
    assert_eq!(status, 200);
    assert_eq!(list["total_count"], 2);
    assert_eq!(list["has_next"], true);
    assert_eq!(list["jobs"][0]["job_id"], b.as_str(), "newest first");
    let (_, list) = s.get("/api/v1/jobs?age_group=child&country=kenya");
    assert_eq!(list["total_count"], 1);
    assert_eq!(list["jobs"][0]["status"], "success");
    let (_, list) = s.get("/api/v1/jobs?created_after=2999-01-01T00:00:00Z");
    assert_eq!(list["total_count"], 0);
    let (_, list) = s.get("/api/v1/jobs?created_after=2000-01-01T00:00:00%2B02:00&status=success");
    assert_eq!(list["total_count"], 2);

    let (status, retry) = s.post(&format!("/api/v1/jobs/retry/{a}"), &json!({}));
    assert_eq!(status, 409, "{retry}");
    let (status, health) = s.get("/api/v1/jobs/health");
    assert_eq!(status, 200);
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["queue_stats"]["pending_jobs"], 0);
    let (status, metrics) = s.get("/api/v1/jobs/metrics?time_range=1h");
    assert_eq!(status, 200);
    assert_eq!(metrics["total_jobs"], 2);
    assert_eq!(metrics["success_rate"], 100.0);
    assert_eq!(metrics["error_rate"], 0.0);

    let (status, deleted) = s.delete(&format!("/api/v1/jobs/{a}"));
    assert_eq!(status, 200);
    assert_eq!(deleted["status"], "deleted");
    assert_eq!(s.get(&format!("/api/v1/calibrate/{a}/status")).0, 404);
    let (status, bulk) = s.delete("/api/v1/jobs/clear/all?confirm=true");
    assert_eq!(status, 200);
    assert_eq!(bulk["deleted_count"], 1);
    assert_eq!(s.get("/api/v1/jobs").1["total_count"], 0);
}
