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

/// A job's number as the result gives it (rows are algorithms or `ensemble`).
fn number(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("a number, got {v}"))
}

/// Waits for a job that must succeed and returns its result object.
fn finished_result(s: &dyn Api, id: &str) -> Value {
    let done = s.wait(id, Duration::from_secs(60));
    assert_eq!(done["status"], "success", "{done}");
    let (status, result) = s.get(&format!("/api/v1/calibrate/{id}/result"));
    assert_eq!(status, 200);
    result["result"].clone()
}

fn text_of(body: Value) -> String {
    match body {
        Value::String(text) => text,
        other => panic!("a text body, got {other}"),
    }
}

/// Checks CSV lines (header excluded) against the result: every number parses back to
/// exactly the result's. `skip` leading columns (the job ID in a batch file) are ignored.
fn check_csv_lines<'a>(lines: impl Iterator<Item = &'a str>, r: &Value, skip: usize) -> usize {
    let causes: Vec<&str> = r["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let mut count = 0;
    for line in lines {
        let cells: Vec<&str> = line.split(',').skip(skip).collect();
        assert_eq!(cells.len(), 9, "{line}");
        let (row, cause) = (cells[0], cells[1]);
        let j = causes.iter().position(|c| *c == cause).expect("a cause");
        let value = |cell: &str| -> f64 { cell.parse().unwrap_or_else(|_| panic!("{line}")) };
        let calibrated = &r["calibrated"][row];
        assert_eq!(
            cells[2],
            r["calibrated_causes"][row][j].to_string(),
            "{line}"
        );
        assert_eq!(
            value(cells[3]),
            number(&r["uncalibrated"][row][j]),
            "{line}"
        );
        assert_eq!(value(cells[4]), number(&calibrated["mean"][j]), "{line}");
        assert_eq!(
            value(cells[5]),
            number(&calibrated["lower_ci"][j]),
            "{line}"
        );
        assert_eq!(
            value(cells[6]),
            number(&calibrated["upper_ci"][j]),
            "{line}"
        );
        if row != "ensemble" {
            assert_eq!(value(cells[7]), number(&r["uncalibrated_deaths"][row][j]));
            assert_eq!(value(cells[8]), number(&r["calibrated_deaths"][row][j]));
        }
        count += 1;
    }
    count
}

pub fn result_files_agree_with_the_result(s: &dyn Api) {
    let body = json!({
        "va_data": {"eava": "use_example", "insilicova": "use_example"},
        "age_group": "neonate", "country": "Kenya",
        "mcmc": {"n_mcmc": 400, "n_burn": 400},
    });
    let (status, created) = s.post("/api/v1/calibrate/async", &body);
    assert_eq!(status, 200, "{created}");
    let id = created["job_id"].as_str().unwrap().to_string();
    let r = finished_result(s, &id);
    let rows = 3; // eava, insilicova, ensemble
    let causes = r["causes"].as_array().unwrap().len();

    let (status, csv, headers) = s.call(
        "GET",
        &format!("/api/v1/calibrate/{id}/result.csv"),
        None,
        &[],
    );
    assert_eq!(status, 200);
    assert!(headers
        .iter()
        .any(|(k, v)| k == "content-type" && v.starts_with("text/csv")));
    let csv = text_of(csv);
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("algorithm,cause,calibrated,uncalibrated_csmf,calibrated_mean,calibrated_lower,calibrated_upper,uncalibrated_deaths,calibrated_deaths")
    );
    assert_eq!(check_csv_lines(lines, &r, 0), rows * causes);

    let (status, svg) = s.get(&format!("/api/v1/calibrate/{id}/plot.svg"));
    assert_eq!(status, 200);
    let svg = text_of(svg);
    let doc = roxmltree::Document::parse(&svg).expect("the figure is XML");
    let bars: Vec<roxmltree::Node> = doc
        .descendants()
        .filter(|n| n.has_tag_name("rect") && n.attribute("data-cause").is_some())
        .collect();
    assert_eq!(bars.len(), rows * causes);
    let names: Vec<&str> = r["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for bar in &bars {
        let row = bar.attribute("data-algorithm").unwrap();
        let j = names
            .iter()
            .position(|c| Some(*c) == bar.attribute("data-cause"))
            .unwrap();
        let attr = |name: &str| -> f64 { bar.attribute(name).unwrap().parse().unwrap() };
        let calibrated = &r["calibrated"][row];
        assert_eq!(attr("data-mean"), number(&calibrated["mean"][j]));
        assert_eq!(attr("data-lower"), number(&calibrated["lower_ci"][j]));
        assert_eq!(attr("data-upper"), number(&calibrated["upper_ci"][j]));
        assert!(
            bar.children().any(|c| c.has_tag_name("title")),
            "a bar has a title"
        );
    }

    let (status, report) = s.get(&format!("/api/v1/calibrate/{id}/report.html"));
    assert_eq!(status, 200);
    let report = text_of(report);
    assert!(report.starts_with("<!DOCTYPE html>"));
    assert!(report.contains("<svg"), "the figure is inline");
    for external in ["src=", "href=\"http", "url(http", "@import"] {
        assert!(
            !report.contains(external),
            "no external requests: {external}"
        );
    }
    for row in ["eava", "insilicova", "ensemble"] {
        for j in 0..causes {
            let mean = format!("{:.1}", 100.0 * number(&r["calibrated"][row]["mean"][j]));
            assert!(report.contains(&format!(">{mean}<")), "{row} {j}: {mean}");
        }
    }

    // Unknown jobs and batches are 404s with the error body.
    for path in [
        "/api/v1/calibrate/job_000000000000/result.csv",
        "/api/v1/calibrate/job_000000000000/plot.svg",
        "/api/v1/calibrate/job_000000000000/report.html",
        "/api/v1/calibrate/batch/batch_000000000000/result.csv",
    ] {
        let (status, body) = s.get(path);
        assert_eq!(status, 404, "{path}: {body}");
        assert_error_body(404, &body);
    }

    // A batch's file holds every successful member, job ID first.
    let (status, batch) = s.post(
        "/api/v1/calibrate/batch",
        &json!({"jobs": [quick(json!({})), quick(json!({"mcmc": {"n_mcmc": 400, "n_burn": 400, "seed": 2}}))]}),
    );
    assert_eq!(status, 200, "{batch}");
    let batch_id = batch["batch_id"].as_str().unwrap();
    let ids: Vec<String> = serde_json::from_value(batch["job_ids"].clone()).unwrap();
    let results: Vec<Value> = ids.iter().map(|id| finished_result(s, id)).collect();
    let (status, csv) = s.get(&format!("/api/v1/calibrate/batch/{batch_id}/result.csv"));
    assert_eq!(status, 200);
    let csv = text_of(csv);
    let mut lines = csv.lines();
    assert!(lines.next().unwrap().starts_with("job_id,algorithm,cause,"));
    let lines: Vec<&str> = lines.collect();
    for (id, r) in ids.iter().zip(&results) {
        let own = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with(&format!("{id},")));
        assert_eq!(check_csv_lines(own, r, 1), 6, "{id}");
    }
    assert_eq!(lines.len(), 12);
}

pub fn reference_data_names_what_requests_accept(s: &dyn Api) {
    let (status, r) = s.get("/api/v1/reference");
    assert_eq!(status, 200);
    assert_eq!(r["age_groups"][0]["age_group"], "neonate");
    assert_eq!(r["age_groups"][1]["causes"][2], "diarrhea");
    assert_eq!(r["rules"], json!(["2.3.1", "2.2"]));
    assert_eq!(r["defaults"]["rules"], "2.3.1");
    let (status, map) = s.get("/api/v1/reference/cause-map/neonate");
    assert_eq!(status, 200);
    assert_eq!(map["labels"]["neonatal sepsis"], "sepsis_meningitis_inf");
    let (status, body) = s.get("/api/v1/reference/cause-map/adult");
    assert_eq!(status, 404);
    assert_error_body(404, &body);
}

/// A multipart/form-data body of (part name, content) pairs.
fn multipart(parts: &[(&str, &str)]) -> (String, String) {
    let boundary = "vacal-test-boundary-7d1f";
    let mut body = String::new();
    for (name, content) in parts {
        let filename = if *name == "request" {
            String::new()
        } else {
            format!("; filename=\"{name}.csv\"")
        };
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"{filename}\r\n\r\n{content}\r\n"
        ));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn post_multipart(s: &dyn Api, parts: &[(&str, &str)]) -> (u16, Value) {
    let (content_type, body) = multipart(parts);
    let (status, v, _) = s.call(
        "POST",
        "/api/v1/calibrate/async",
        Some(&body),
        &[("content-type", &content_type)],
    );
    (status, v)
}

pub fn files_upload_like_json_bodies(s: &dyn Api) {
    let setting = json!({"age_group": "neonate", "country": "Mozambique",
                         "mcmc": {"n_mcmc": 400, "n_burn": 400}});
    let mut example = setting.clone();
    example["va_data"] = json!({"eava": "use_example"});
    let (status, created) = s.post("/api/v1/calibrate/async", &example);
    assert_eq!(status, 200, "{created}");
    let from_json = finished_result(s, created["job_id"].as_str().unwrap());

    // The EAVA example's counts (neonate) as a counts file and a long file.
    let counts = "cause;deaths\ncongenital_malformation;44\npneumonia;168\n\
                  sepsis_meningitis_inf;267\nipre;268\nother;29\nprematurity;164\n";
    // The bundled COMSA output itself, with its original labels and Unspecified rows.
    let long = include_str!("../../examples/comsa_eava_neonate.csv");
    // One 0/1 row per death, in columns of another order, tab separated.
    let mut wide = String::from(
        "ID\tprematurity\tipre\tother\tsepsis_meningitis_inf\tpneumonia\tcongenital_malformation\n",
    );
    for (column, n) in [164, 268, 29, 267, 168, 44].into_iter().enumerate() {
        for i in 0..n {
            let row: Vec<&str> = (0..6)
                .map(|c| if c == column { "1" } else { "0" })
                .collect();
            wide.push_str(&format!("w{column}_{i}\t{}\n", row.join("\t")));
        }
    }
    for file in [counts, long, wide.as_str()] {
        let (status, created) = post_multipart(
            s,
            &[("request", &setting.to_string()), ("va_data.eava", file)],
        );
        assert_eq!(status, 200, "{created}");
        let from_file = finished_result(s, created["job_id"].as_str().unwrap());
        assert_eq!(from_file["calibrated"], from_json["calibrated"]);
        assert_eq!(
            from_file["uncalibrated_deaths"],
            from_json["uncalibrated_deaths"]
        );
    }

    // A bad file is a 422 naming the part and the line.
    let (status, body) = post_multipart(
        s,
        &[(
            "va_data.eava",
            "ID,cause\n1,Prematurity\n2,neonatal sepsis \n",
        )],
    );
    assert_eq!(status, 422, "{body}");
    assert_error_body(422, &body);
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("va_data.eava: line 3: unknown cause 'neonatal sepsis ' for age group neonate (did you mean 'neonatal sepsis'?)"),
        "{detail}"
    );
    let (status, body) = post_multipart(s, &[("va_data.openva", "ID,cause\n1,Prematurity\n")]);
    assert_eq!(status, 422, "{body}");
    let (status, body) = post_multipart(s, &[("notes", "hello")]);
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("notes: unknown part"),
        "{body}"
    );

    // The preview reads the same files without running anything.
    let validate = |parts: &[(&str, &str)]| -> Value {
        let (content_type, body) = multipart(parts);
        let (status, v, _) = s.call(
            "POST",
            "/api/v1/validate",
            Some(&body),
            &[("content-type", &content_type)],
        );
        assert_eq!(status, 200, "{v}");
        v
    };
    let p = validate(&[("request", &setting.to_string()), ("va_data.eava", long)]);
    assert_eq!(p["valid"], true, "{p}");
    let eava = &p["algorithms"]["eava"];
    assert_eq!(eava["form"], "long");
    assert_eq!(eava["deaths"], 940);
    assert_eq!(eava["unspecified_dropped"], 250);
    assert_eq!(eava["counts"]["ipre"], 268);
    assert_eq!(eava["not_calibrated"]["other"], "donotcalib");
    assert_eq!(p["settings"]["country"], "Mozambique");
    let p = validate(&[("va_data.eava", "ID,cause\n1,Prematurity\n1,Prematurity\n")]);
    assert_eq!(p["valid"], false, "{p}");
    assert_eq!(p["errors"][0]["field"], "va_data.eava");
    let (status, p) = s.post("/api/v1/validate", &json!({"age_group": "adult"}));
    assert_eq!(status, 200);
    assert_eq!(p["valid"], false);
    assert_eq!(p["errors"][0]["field"], "age_group");
}
