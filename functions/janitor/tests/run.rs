//! The janitor Lambda's pass over local adapters and an in-memory dead-letter source: jobs
//! whose message was dead-lettered end failed with the reason, the message is deleted only
//! after that, and the core's tick still runs.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::Utc;
use serde_json::json;
use vacal_aws::{Band, DeadLetter};
use vacal_core::domain::JobStatus;
use vacal_core::ports::{JobStore, RandomIds, StoreError, StoreResult, SystemClock};
use vacal_core::{Config, JobService, Ports};
use vacal_janitor::{DeadLetterSource, Handler};

#[derive(Default)]
struct Letters {
    waiting: Mutex<Vec<DeadLetter>>,
    deleted: Mutex<Vec<String>>,
    fail_receive: Mutex<bool>,
}

#[async_trait]
impl DeadLetterSource for Letters {
    async fn receive(&self, max: u32) -> StoreResult<Vec<DeadLetter>> {
        if *self.fail_receive.lock().unwrap() {
            return Err(StoreError::Unavailable("injected outage".into()));
        }
        let mut waiting = self.waiting.lock().unwrap();
        let n = waiting.len().min(max as usize);
        Ok(waiting.drain(..n).collect())
    }
    async fn delete(&self, receipt: &str) -> StoreResult<()> {
        self.deleted.lock().unwrap().push(receipt.to_string());
        Ok(())
    }
}

fn letter(job_id: Option<&str>, body: &str, receipt: &str) -> DeadLetter {
    DeadLetter {
        job_id: job_id.map(str::to_string),
        body: body.to_string(),
        receive_count: 4,
        band: Band::Normal,
        receipt: receipt.to_string(),
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    store: Arc<vacal_local::SqliteStore>,
    service: JobService,
    letters: Arc<Letters>,
    handler: Arc<Handler>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (store, results) = vacal_local::open(dir.path()).unwrap();
    let store = Arc::new(store);
    let ports = Ports {
        store: store.clone(),
        queue: store.clone(),
        results: Arc::new(results),
        clock: Arc::new(SystemClock),
        ids: Arc::new(RandomIds),
    };
    let letters = Arc::new(Letters::default());
    let config = Config::default();
    Setup {
        _dir: dir,
        store,
        service: JobService::new(ports.clone(), config.clone()),
        handler: Handler::new(ports, config, letters.clone()),
        letters,
    }
}

impl Setup {
    async fn create(&self) -> String {
        self.service.create_job(&json!({})).await.unwrap().job_id
    }
}

/// A scheduled event as EventBridge sends it; the handler ignores its content, but the
/// entry point must accept it as its input type.
#[test]
fn the_scheduled_event_is_accepted_as_input() {
    let text = include_str!("../../../events/schedule-janitor.json");
    let event: serde_json::Value = serde_json::from_str(text).expect("JSON");
    assert_eq!(event["detail-type"], "Scheduled Event");
    assert_eq!(event["source"], "aws.events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_lettered_jobs_end_failed_with_the_reason() {
    let s = setup();
    let poisoned = s.create().await;
    let finished = s.create().await;
    s.service.cancel_job(&finished).await.unwrap();
    s.letters.waiting.lock().unwrap().extend([
        letter(
            Some(&poisoned),
            &json!({"job_id": poisoned}).to_string(),
            "r1",
        ),
        letter(
            Some(&finished),
            &json!({"job_id": finished}).to_string(),
            "r2",
        ),
        letter(None, "garbage", "r3"),
        letter(
            Some("job_0000deadbeef"),
            r#"{"job_id":"job_0000deadbeef"}"#,
            "r4",
        ),
    ]);
    let report = s.handler.run().await.expect("janitor run");
    assert_eq!(report.dead_lettered, vec![poisoned.clone()]);
    assert_eq!(
        report.dead_letters_settled, 2,
        "the cancelled and the unknown job"
    );
    assert_eq!(report.dead_letters_malformed, 1);
    assert_eq!(
        *s.letters.deleted.lock().unwrap(),
        vec!["r1", "r2", "r3", "r4"],
        "every dead letter is deleted once handled"
    );

    let job = s
        .store
        .get_job(&poisoned, Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    let error = job.error.expect("error details");
    assert_eq!(error.error_type, "DeliveryFailed");
    assert!(
        error.error_message.contains("4 deliveries"),
        "{}",
        error.error_message
    );
    assert!(job.completed_at.is_some());
    let logs = s.store.logs(&poisoned, None, 0, 10).await.unwrap();
    assert!(
        logs[0].message.contains("dead-letter"),
        "newest log names the cause: {:?}",
        logs[0]
    );
    let cancelled = s
        .store
        .get_job(&finished, Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        cancelled.status,
        JobStatus::Cancelled,
        "a job that already ended keeps its state"
    );

    // The API shows the failure.
    let status = s.service.job_status(&poisoned, &Default::default()).await;
    let status = status.expect("status");
    assert_eq!(status.status, JobStatus::Failed, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_core_tick_runs_and_an_outage_is_an_error_not_a_silent_success() {
    let s = setup();
    let report = s.handler.run().await.expect("an empty run");
    assert!(report.dead_lettered.is_empty() && report.timed_out.is_empty());
    *s.letters.fail_receive.lock().unwrap() = true;
    let err = s.handler.run().await.expect_err("the outage is reported");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}
