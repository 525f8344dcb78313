//! Every route's happy path and the errors of api-reference §5–§10, through the router.

mod common;

use axum::http::StatusCode;
use common::{App, SMALL_JOB};
use serde_json::{json, Value};
use vacal_http::schema;

fn typed<T: serde::de::DeserializeOwned>(body: &Value) -> T {
    serde_json::from_value(body.clone())
        .unwrap_or_else(|e| panic!("response does not match its documented type: {e}\n{body}"))
}

/// The job's warning-level log messages, oldest first.
async fn warning_messages(app: &App, id: &str) -> Vec<String> {
    let status = app
        .get(&format!("/api/v1/calibrate/{id}/status?log_level=warning"))
        .await;
    let mut messages: Vec<String> = status.body["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap().to_string())
        .collect();
    // The log lists the newest entry first.
    messages.reverse();
    messages
}

#[tokio::test]
async fn a_job_runs_from_creation_to_result() {
    let app = App::new();
    let created = app.post("/api/v1/calibrate/async", SMALL_JOB).await;
    assert_eq!(created.status, StatusCode::OK);
    let created: schema::JobCreatedResponse = typed(&created.body);
    assert_eq!(created.status, "created");
    let id = created.job_id;
    assert!(id.starts_with("job_") && id.len() == 16, "{id}");

    // Pending: status answers, the result is refused with 400.
    let status = app.get(&format!("/api/v1/calibrate/{id}/status")).await;
    assert_eq!(status.status, StatusCode::OK);
    let pending: schema::JobStatusResponse = typed(&status.body);
    assert_eq!(pending.status, schema::JobStatus::Pending);
    assert_eq!(pending.progress.as_ref().unwrap().step_name, "Queued");
    assert_eq!(pending.metadata.job_type, schema::JobType::Calibration);
    assert!(pending
        .logs
        .iter()
        .any(|l| l.message.contains("priority 5")));
    let early = app.get(&format!("/api/v1/calibrate/{id}/result")).await;
    early.assert_error(400);
    assert_eq!(
        early.detail(),
        format!("Job {id} is not completed (status: pending)")
    );
    // The result files answer as /result does while the job is not finished.
    for file in ["result.csv", "plot.svg", "report.html"] {
        let r = app.get(&format!("/api/v1/calibrate/{id}/{file}")).await;
        r.assert_error(400);
        assert_eq!(r.detail(), early.detail(), "{file}");
    }

    app.run(&id).await;

    let status = app.get(&format!("/api/v1/calibrate/{id}/status")).await;
    let done: schema::JobStatusResponse = typed(&status.body);
    assert_eq!(done.status, schema::JobStatus::Success, "{}", status.body);
    let progress = done.progress.unwrap();
    assert_eq!((progress.current_step, progress.total_steps), (5, 5));
    assert_eq!(progress.step_name, "Completed");
    assert_eq!(done.result_summary.unwrap().algorithms_processed, Some(1));
    assert!(done.error_details.is_none());
    assert!(done.metadata.started_at.is_some() && done.metadata.completed_at.is_some());

    let result = app.get(&format!("/api/v1/calibrate/{id}/result")).await;
    assert_eq!(result.status, StatusCode::OK, "{}", result.body);
    let result: schema::JobResultResponse = typed(&result.body);
    assert_eq!(result.status, schema::JobStatus::Success);
    assert!(result.cache_info.is_none());
    let schema::CalibrationResult::Success(r) = result.result else {
        panic!("a success result")
    };
    assert_eq!(r.output.causes.len(), 6);
    assert_eq!(r.age_group.as_deref(), Some("neonate"));
    assert_eq!(r.country.as_deref(), Some("Mozambique"));
    let eava = &r.output.calibrated["eava"];
    assert!((eava.mean.iter().sum::<f64>() - 1.0).abs() < 0.01);
    for i in 0..6 {
        assert!(eava.lower_ci[i] <= eava.mean[i] && eava.mean[i] <= eava.upper_ci[i]);
    }
    assert_eq!(r.output.uncalibrated["eava"].len(), 6);
    // 200 draws over 4 chains cannot reach the ESS of 400 that trustworthy summaries need:
    // the result and the job's log say so.
    let warnings = r.output.warnings;
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("eava: min bulk ESS ") && w.contains("below 400")),
        "{warnings:?}"
    );
    assert_eq!(warning_messages(&app, &id).await, warnings);

    // Paging and filtering the logs; a finished job cannot be cancelled.
    let logs = app
        .get(&format!(
            "/api/v1/calibrate/{id}/status?log_level=info&log_limit=1&log_offset=1"
        ))
        .await;
    assert_eq!(logs.body["logs"].as_array().unwrap().len(), 1);
    assert_eq!(logs.body["logs"][0]["level"], "info");
    let cancel = app.delete(&format!("/api/v1/calibrate/{id}")).await;
    cancel.assert_error(409);
    assert_eq!(
        cancel.detail(),
        format!("Job {id} is already success and cannot be cancelled")
    );
}

#[tokio::test]
async fn cancelling_twice_is_a_conflict() {
    let app = App::new();
    let id = app.create("{}").await;
    let first = app.delete(&format!("/api/v1/calibrate/{id}")).await;
    assert_eq!(first.status, StatusCode::OK);
    let first: schema::CancelResponse = typed(&first.body);
    assert_eq!(
        (first.job_id.as_str(), first.status.as_str()),
        (id.as_str(), "cancelled")
    );
    assert_eq!(app.status_of(&id).await, "cancelled");
    app.delete(&format!("/api/v1/calibrate/{id}"))
        .await
        .assert_error(409);
    let result = app.get(&format!("/api/v1/calibrate/{id}/result")).await;
    result.assert_error(400);
    assert!(result.detail().contains("status: cancelled"));
}

#[tokio::test]
async fn unknown_ids_are_404_everywhere() {
    let app = App::new();
    let id = "job_000000000000";
    for (method, uri) in [
        ("GET", format!("/api/v1/calibrate/{id}/status")),
        ("GET", format!("/api/v1/calibrate/{id}/result")),
        ("DELETE", format!("/api/v1/calibrate/{id}")),
        ("DELETE", format!("/api/v1/jobs/{id}")),
        ("POST", format!("/api/v1/jobs/retry/{id}")),
        (
            "GET",
            "/api/v1/calibrate/batch/batch_000000000000/status".into(),
        ),
        // Odd IDs are simply unknown (§1).
        ("GET", "/api/v1/calibrate/not-an-id!/status".into()),
        ("GET", "/api/v1/calibrate/%FF%FE/status".into()),
    ] {
        let r = app.send(method.parse().unwrap(), &uri, None).await;
        r.assert_error(404);
        assert!(
            r.detail().contains("not found"),
            "{method} {uri}: {}",
            r.body
        );
    }
    let r = app.get(&format!("/api/v1/calibrate/{id}/status")).await;
    assert_eq!(r.detail(), format!("Job {id} not found"));
    let r = app
        .get("/api/v1/calibrate/batch/batch_000000000000/status")
        .await;
    assert_eq!(r.detail(), "Batch batch_000000000000 not found");
}

#[tokio::test]
async fn bad_query_parameters_are_422_even_for_unknown_jobs() {
    let app = App::new();
    for (uri, field) in [
        (
            "/api/v1/calibrate/job_000000000000/status?log_limit=0",
            "query.log_limit",
        ),
        (
            "/api/v1/calibrate/job_000000000000/status?log_level=loud",
            "query.log_level",
        ),
        (
            "/api/v1/calibrate/job_000000000000/status?log_offset=-1",
            "query.log_offset",
        ),
        ("/api/v1/jobs?page_size=101", "query.page_size"),
        ("/api/v1/jobs?status=done", "query.status"),
        (
            "/api/v1/jobs?created_after=yesterday",
            "query.created_after",
        ),
        ("/api/v1/jobs?age_group=adult", "query.age_group"),
        ("/api/v1/jobs/metrics?time_range=2h", "query.time_range"),
    ] {
        let r = app.get(uri).await;
        r.assert_error(422);
        let errors = r.body["errors"].as_array().expect("422 carries errors");
        assert!(
            errors.iter().any(|e| e["field"] == field),
            "{uri}: {}",
            r.body
        );
        assert!(r.detail().contains(field), "{uri}: {}", r.body);
    }
    let r = app
        .send(
            "POST".parse().unwrap(),
            "/api/v1/jobs/retry/job_000000000000?new_priority=11",
            None,
        )
        .await;
    r.assert_error(422);
    let r = app.delete("/api/v1/cache/clear?confirm=maybe").await;
    r.assert_error(422);
    let r = app
        .delete("/api/v1/jobs/clear/all?confirm=true&status=nope")
        .await;
    r.assert_error(422);
}

#[tokio::test]
async fn invalid_requests_are_422_with_errors() {
    let app = App::new();
    let r = app
        .post("/api/v1/calibrate/async", r#"{"va_data": {}}"#)
        .await;
    r.assert_error(422);
    let errors: Vec<schema::FieldError> = typed(&r.body["errors"]);
    assert!(errors.iter().any(|e| e.field == "va_data"), "{}", r.body);
    assert!(r.detail().contains("va_data"));

    for body in [
        r#"{"age_group": "adult"}"#,
        r#"{"priority": "high"}"#,
        r#"{"priority": 11}"#,
        r#"{"timeout_minutes": 0}"#,
        r#"{"mmat_type": "samples"}"#,
        r#"{"va_data": {"openva": "use_example"}}"#,
        r#"{"country": ""}"#,
    ] {
        let r = app.post("/api/v1/calibrate/async", body).await;
        r.assert_error(422);
        assert!(
            r.body["errors"].as_array().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
    }
    // Nothing was created by the refused requests.
    let list = app.get("/api/v1/jobs").await;
    assert_eq!(list.body["total_count"], 0);
}

#[tokio::test]
async fn batches_are_created_and_reported() {
    let app = App::new();
    let body = json!({
        "jobs": [{"age_group": "neonate"}, {"age_group": "child", "va_data": {"interva": "use_example"}}],
        "batch_name": "Two",
        "parallel_limit": 1,
        "fail_fast": false,
    });
    let r = app.post("/api/v1/calibrate/batch", &body.to_string()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let created: schema::BatchCreatedResponse = typed(&r.body);
    assert_eq!(created.job_ids.len(), 2);
    assert_eq!(created.batch_metadata.total_jobs, 2);
    assert_eq!(created.batch_metadata.batch_name.as_deref(), Some("Two"));
    assert_eq!(created.batch_metadata.parallel_limit, 1);

    let r = app
        .get(&format!(
            "/api/v1/calibrate/batch/{}/status",
            created.batch_id
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let status: schema::BatchStatusResponse = typed(&r.body);
    assert_eq!(status.total_jobs, 2);
    assert_eq!(status.pending_jobs, 2);
    assert_eq!(status.batch_status, schema::BatchStatus::Pending);
    let ids: Vec<&str> = status
        .job_statuses
        .iter()
        .map(|j| j.job_id.as_str())
        .collect();
    assert_eq!(
        ids,
        created
            .job_ids
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );

    // Members are ordinary jobs.
    let member = app
        .get(&format!("/api/v1/calibrate/{}/status", created.job_ids[1]))
        .await;
    let member: schema::JobStatusResponse = typed(&member.body);
    assert_eq!(member.metadata.job_type, schema::JobType::BatchCalibration);
    assert_eq!(
        member.metadata.batch_id.as_deref(),
        Some(created.batch_id.as_str())
    );
}

#[tokio::test]
async fn an_invalid_batch_member_rejects_the_whole_batch() {
    let app = App::new();
    let body = r#"{"jobs": [{}, {"age_group": "adult"}]}"#;
    let r = app.post("/api/v1/calibrate/batch", body).await;
    r.assert_error(422);
    let errors: Vec<schema::FieldError> = typed(&r.body["errors"]);
    assert!(
        errors.iter().any(|e| e.field == "jobs[1].age_group"),
        "{}",
        r.body
    );
    assert!(r.detail().contains("jobs[1].age_group"));
    assert_eq!(app.get("/api/v1/jobs").await.body["total_count"], 0);

    for bad in [
        r#"{"jobs": []}"#,
        r#"{"jobs": {}}"#,
        r#"{"batch_name": "no jobs"}"#,
        r#"{"jobs": [{}], "parallel_limit": 11}"#,
        r#"{"jobs": [{}], "fail_fast": "yes"}"#,
    ] {
        app.post("/api/v1/calibrate/batch", bad)
            .await
            .assert_error(422);
    }
    let too_many = json!({"jobs": vec![json!({}); 51]}).to_string();
    app.post("/api/v1/calibrate/batch", &too_many)
        .await
        .assert_error(422);
}

#[tokio::test]
async fn jobs_are_listed_with_filters_and_pages() {
    let app = App::new();
    let a = app
        .create(r#"{"age_group": "neonate", "country": "Kenya"}"#)
        .await;
    let b = app.create(r#"{"age_group": "child"}"#).await;
    let r = app.get("/api/v1/jobs").await;
    assert_eq!(r.status, StatusCode::OK);
    let all: schema::JobListResponse = typed(&r.body);
    assert_eq!(all.total_count, 2);
    assert_eq!((all.page, all.page_size, all.has_next), (1, 20, false));
    assert_eq!(all.jobs[0].metadata.job_id, b, "newest first");
    assert_eq!(all.jobs[0].status, schema::JobStatus::Pending);

    let r = app.get("/api/v1/jobs?age_group=neonate").await;
    let neonates: schema::JobListResponse = typed(&r.body);
    assert_eq!(neonates.total_count, 1);
    assert_eq!(neonates.jobs[0].metadata.job_id, a);
    assert_eq!(neonates.jobs[0].country.as_deref(), Some("Kenya"));

    let r = app.get("/api/v1/jobs?page=1&page_size=1").await;
    let page: schema::JobListResponse = typed(&r.body);
    assert_eq!((page.jobs.len(), page.has_next), (1, true));
    let r = app
        .get("/api/v1/jobs?created_after=2000-01-01T00:00:00Z&created_before=2999-01-01T00:00:00%2B02:00")
        .await;
    assert_eq!(r.body["total_count"], 2, "{}", r.body);
    let r = app.get("/api/v1/jobs?status=success").await;
    assert_eq!(r.body["total_count"], 0);
}

#[tokio::test]
async fn cache_stats_and_clear() {
    let app = App::new();
    let cached = SMALL_JOB.replacen('{', r#"{"use_cache": true, "#, 1);
    let first = app.create(&cached).await;
    app.run(&first).await;
    let second = app.create(&cached).await;
    app.run(&second).await;

    let r = app.get(&format!("/api/v1/calibrate/{second}/result")).await;
    let hit: schema::JobResultResponse = typed(&r.body);
    let info = hit.cache_info.expect("the second job is a cache hit");
    assert_eq!(info.source_job_id, first);
    // The cached result's warnings (200 draws are too few) are logged on the new job too.
    let first_warnings = warning_messages(&app, &first).await;
    assert!(!first_warnings.is_empty());
    assert_eq!(warning_messages(&app, &second).await, first_warnings);

    let r = app.get("/api/v1/cache/stats").await;
    assert_eq!(r.status, StatusCode::OK);
    let stats: schema::CacheStatsResponse = typed(&r.body);
    assert_eq!(stats.total_cached_results, 1);
    assert_eq!(stats.cache_hit_rate, 50.0);
    assert!(stats.oldest_cached_result.is_some());

    let r = app.delete("/api/v1/cache/clear").await;
    r.assert_error(400);
    assert_eq!(
        r.detail(),
        "Cache clearing requires explicit confirmation (set confirm=true)"
    );
    let r = app
        .delete("/api/v1/cache/clear?confirm=true&age_group=child")
        .await;
    let cleared: schema::CacheClearResponse = typed(&r.body);
    assert_eq!(cleared.cleared_results, 0);
    let r = app.delete("/api/v1/cache/clear?confirm=1").await;
    let cleared: schema::CacheClearResponse = typed(&r.body);
    assert_eq!(cleared.cleared_results, 1);
    assert_eq!(cleared.message, "Cleared 1 cached results");
}

#[tokio::test]
async fn health_metrics_and_service_info() {
    let app = App::new();
    let r = app.get("/api/v1/jobs/health").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let health: schema::HealthResponse = typed(&r.body);
    assert_eq!(health.status, "healthy");
    assert_eq!(health.redis, "healthy");
    assert_eq!(health.queue_stats.pending_jobs, 0);

    let id = app.create(SMALL_JOB).await;
    app.run(&id).await;
    let r = app.get("/api/v1/jobs/metrics?time_range=1h").await;
    assert_eq!(r.status, StatusCode::OK);
    let m: schema::MetricsResponse = typed(&r.body);
    assert_eq!((m.time_range.as_str(), m.total_jobs), ("1h", 1));
    assert_eq!((m.success_rate, m.error_rate), (100.0, 0.0));
    let r = app.get("/api/v1/jobs/metrics").await;
    assert_eq!(r.body["time_range"], "24h");

    let r = app.get("/").await;
    assert_eq!(r.status, StatusCode::OK);
    let info: schema::ServiceInfo = typed(&r.body);
    assert_eq!(info.name, "vacal");
    assert_eq!(info.engine_version, vacal_engine::ENGINE_VERSION);
}

#[tokio::test]
async fn failed_jobs_have_results_and_can_be_retried() {
    let app = App::new();
    let id = app
        .create(r#"{"priority": 3, "timeout_minutes": 10}"#)
        .await;
    // Retrying a job that did not fail is a conflict.
    let r = app
        .send(
            "POST".parse().unwrap(),
            &format!("/api/v1/jobs/retry/{id}"),
            None,
        )
        .await;
    r.assert_error(409);

    app.time_out(&id).await;
    let r = app.get(&format!("/api/v1/calibrate/{id}/status")).await;
    let s: schema::JobStatusResponse = typed(&r.body);
    assert_eq!(s.status, schema::JobStatus::Timeout);
    assert_eq!(s.error_details.unwrap().error_type, "Timeout");
    let r = app.get(&format!("/api/v1/calibrate/{id}/result")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let result: schema::JobResultResponse = typed(&r.body);
    assert_eq!(result.status, schema::JobStatus::Timeout);
    let schema::CalibrationResult::Failure(f) = result.result else {
        panic!("an error result: {}", r.body)
    };
    assert_eq!(f.status, "timeout");
    assert!(!f.error.is_empty());
    // A timed-out job has no numbers to export.
    for file in ["result.csv", "plot.svg", "report.html"] {
        let r = app.get(&format!("/api/v1/calibrate/{id}/{file}")).await;
        r.assert_error(409);
        assert!(
            r.detail().starts_with(&format!(
                "Job {id} has no result to export (status: timeout)"
            )),
            "{file}: {}",
            r.detail()
        );
    }

    let r = app
        .send(
            "POST".parse().unwrap(),
            &format!("/api/v1/jobs/retry/{id}?new_priority=9"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let retry: schema::RetryResponse = typed(&r.body);
    assert_eq!(retry.original_job_id, id);
    assert_eq!(retry.status, "created");
    let r = app
        .get(&format!("/api/v1/calibrate/{}/status", retry.job_id))
        .await;
    let new: schema::JobStatusResponse = typed(&r.body);
    assert_eq!(new.metadata.priority, 9);
    assert_eq!(new.metadata.retry_count, 1);
}

#[tokio::test]
async fn jobs_are_deleted_one_by_one_or_in_bulk() {
    let app = App::new();
    let one = app.create("{}").await;
    let r = app.delete(&format!("/api/v1/jobs/{one}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let deleted: schema::DeleteJobResponse = typed(&r.body);
    assert_eq!(
        (deleted.job_id.as_str(), deleted.status.as_str()),
        (one.as_str(), "deleted")
    );
    app.get(&format!("/api/v1/calibrate/{one}/status"))
        .await
        .assert_error(404);

    let _ = app.create(r#"{"age_group": "child"}"#).await;
    let _ = app.create("{}").await;
    let r = app.delete("/api/v1/jobs/clear/all").await;
    r.assert_error(400);
    let r = app
        .delete("/api/v1/jobs/clear/all?confirm=true&age_group=child")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let bulk: schema::BulkDeleteResponse = typed(&r.body);
    assert_eq!((bulk.deleted_count, bulk.failed_count), (1, 0));
    assert!(bulk.failed_jobs.is_none());
    assert_eq!(app.get("/api/v1/jobs").await.body["total_count"], 1);
}

#[tokio::test]
async fn health_and_metrics_win_over_job_ids() {
    let app = App::new();
    assert_eq!(app.get("/api/v1/jobs/health").await.status, StatusCode::OK);
    assert_eq!(app.get("/api/v1/jobs/metrics").await.status, StatusCode::OK);
    // DELETE on them is a wrong method, not the deletion of a job called "health".
    app.delete("/api/v1/jobs/health").await.assert_error(405);
    app.delete("/api/v1/jobs/metrics").await.assert_error(405);
}
