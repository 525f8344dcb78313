//! Job semantics that depend on time, driven through the core over the real SQLite adapters
//! with a clock the test moves: timeouts without a live worker, fail_fast, no late results,
//! and priority order.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use vacal_core::domain::{BatchStatus, JobStatus};
use vacal_core::ports::{Clock, RandomIds};
use vacal_core::service::finish_job;
use vacal_core::{Config, Janitor, JobService, Ports};

struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    fn advance(&self, by: chrono::Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

struct Setup {
    service: JobService,
    janitor: Janitor,
    ports: Ports,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (store, results) = vacal_local::open(dir.path()).unwrap();
    let store = Arc::new(store);
    let clock = Arc::new(ManualClock(Mutex::new(Utc::now())));
    let ports = Ports {
        store: store.clone(),
        queue: store,
        results: Arc::new(results),
        clock: clock.clone(),
        ids: Arc::new(RandomIds),
    };
    Setup {
        service: JobService::new(ports.clone(), Config::default()),
        janitor: Janitor::new(ports.clone(), Config::default()),
        ports,
        clock,
        _dir: dir,
    }
}

fn body(timeout_minutes: u32, priority: u8) -> Value {
    json!({"va_data": {"eava": [44, 168, 267, 268, 29, 164]},
           "timeout_minutes": timeout_minutes, "priority": priority})
}

async fn status_of(s: &Setup, id: &str) -> Value {
    serde_json::to_value(s.service.job_status(id, &Default::default()).await.unwrap()).unwrap()
}

#[tokio::test]
async fn an_overdue_job_times_out_without_a_worker_and_no_late_result_overwrites_it() {
    let s = setup();
    let id = s.service.create_job(&body(1, 5)).await.unwrap().job_id;
    assert!(s.janitor.tick().await.unwrap().timed_out.is_empty());
    s.clock.advance(chrono::Duration::seconds(61));
    let report = s.janitor.tick().await.unwrap();
    assert_eq!(report.timed_out, vec![id.clone()]);
    let status = status_of(&s, &id).await;
    assert_eq!(status["status"], "timeout");
    assert_eq!(status["error_details"]["error_type"], "Timeout");
    assert!(status["logs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["message"] == "Job timed out" && l["level"] == "error"));
    // A worker that finishes late cannot turn it into a success.
    let (job, changed) = finish_job(&s.ports, &id, JobStatus::Success, |_| {})
        .await
        .unwrap()
        .unwrap();
    assert!(!changed);
    assert_eq!(job.status, JobStatus::Timeout);
    let result = serde_json::to_value(s.service.job_result(&id).await.unwrap()).unwrap();
    assert_eq!(result["result"]["status"], "timeout");
    // The worker acknowledges its message and leaves the job alone.
    let worker = vacal_core::Worker::new(s.ports.clone(), Config::default());
    assert_eq!(
        worker.process(&id).await.unwrap(),
        vacal_core::worker::Outcome::Ack
    );
    assert_eq!(status_of(&s, &id).await["status"], "timeout");
}

#[tokio::test]
async fn fail_fast_cancels_the_other_members_when_one_times_out() {
    let s = setup();
    let batch = s
        .service
        .create_batch(&json!({
            "jobs": [body(1, 5), body(60, 5), body(60, 5)],
            "parallel_limit": 2,
            "fail_fast": true,
        }))
        .await
        .unwrap();
    let (batch_id, ids) = (batch.batch_id, batch.job_ids);
    s.clock.advance(chrono::Duration::seconds(61));
    s.janitor.tick().await.unwrap();
    assert_eq!(status_of(&s, &ids[0]).await["status"], "timeout");
    for id in &ids[1..] {
        let status = status_of(&s, id).await;
        assert_eq!(status["status"], "cancelled", "{id}");
        let expected = format!(
            "Cancelled: batch {batch_id} fail_fast triggered by {}",
            ids[0]
        );
        assert!(status["logs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["message"] == expected.as_str() && l["level"] == "warning"));
    }
    let status = s.service.batch_status(&batch_id).await.unwrap();
    assert_eq!(status.batch_status, BatchStatus::Failed);
    assert_eq!(status.failed_jobs, 1);
    assert_eq!(status.cancelled_jobs, 2);
}

#[tokio::test]
async fn without_fail_fast_the_other_members_go_on() {
    let s = setup();
    let batch = s
        .service
        .create_batch(&json!({"jobs": [body(1, 5), body(60, 5)], "parallel_limit": 1}))
        .await
        .unwrap();
    let ids = batch.job_ids;
    s.clock.advance(chrono::Duration::seconds(61));
    s.janitor.tick().await.unwrap();
    assert_eq!(status_of(&s, &ids[0]).await["status"], "timeout");
    assert_eq!(status_of(&s, &ids[1]).await["status"], "pending");
    // The freed slot let the waiting member onto the queue.
    let deliveries = s
        .ports
        .queue
        .receive(10, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(
        deliveries.iter().any(|d| d.job_id == ids[1]),
        "{deliveries:?}"
    );
}

#[tokio::test]
async fn higher_priority_jobs_are_delivered_first_fifo_within_a_priority() {
    let s = setup();
    let mut ids = Vec::new();
    for priority in [1, 10, 5, 10] {
        let created = s.service.create_job(&body(30, priority)).await.unwrap();
        ids.push(created.job_id);
    }
    let order: Vec<String> = s
        .ports
        .queue
        .receive(10, Duration::from_secs(30))
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.job_id)
        .collect();
    assert_eq!(
        order,
        vec![
            ids[1].clone(),
            ids[3].clone(),
            ids[2].clone(),
            ids[0].clone()
        ]
    );
}
