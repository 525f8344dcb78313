//! The worker Lambda fed with SQS events: partial batch responses, each record isolated.
//! Ports are the local adapters, with a store wrapper that injects storage errors and
//! panics for chosen jobs.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use vacal_core::domain::{Batch, CacheEntry, Job, JobStatus, LogEntry, LogLevel};
use vacal_core::ports::{
    CacheCounter, CacheCounters, JobFilter, JobQueue, JobStore, RandomIds, StoreError, StoreResult,
    SystemClock, Write,
};
use vacal_core::{Config, JobService, Ports};
use vacal_worker::Handler;

/// Delegates to the SQLite store, except `get_job` of chosen IDs: an outage or a panic.
struct Faulty {
    inner: Arc<vacal_local::SqliteStore>,
    unavailable: Mutex<HashSet<String>>,
    panics: Mutex<HashSet<String>>,
}

#[async_trait]
impl JobStore for Faulty {
    async fn insert_job(&self, job: &Job) -> StoreResult<()> {
        self.inner.insert_job(job).await
    }
    async fn get_job(&self, job_id: &str, now: DateTime<Utc>) -> StoreResult<Option<Job>> {
        if self.panics.lock().unwrap().contains(job_id) {
            panic!("injected panic reading {job_id}");
        }
        if self.unavailable.lock().unwrap().contains(job_id) {
            return Err(StoreError::Unavailable("injected outage".into()));
        }
        self.inner.get_job(job_id, now).await
    }
    async fn update_job(&self, job: &Job) -> StoreResult<Write> {
        self.inner.update_job(job).await
    }
    async fn delete_job(&self, job_id: &str) -> StoreResult<u64> {
        self.inner.delete_job(job_id).await
    }
    async fn list_jobs(
        &self,
        filter: &JobFilter,
        offset: u64,
        limit: u64,
        now: DateTime<Utc>,
    ) -> StoreResult<(Vec<Job>, u64)> {
        self.inner.list_jobs(filter, offset, limit, now).await
    }
    async fn jobs_by_status(
        &self,
        statuses: &[JobStatus],
        since: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Job>> {
        self.inner.jobs_by_status(statuses, since, now).await
    }
    async fn append_log(&self, job_id: &str, entry: &LogEntry, max: u64) -> StoreResult<()> {
        self.inner.append_log(job_id, entry, max).await
    }
    async fn logs(
        &self,
        job_id: &str,
        level: Option<LogLevel>,
        offset: u64,
        limit: u64,
    ) -> StoreResult<Vec<LogEntry>> {
        self.inner.logs(job_id, level, offset, limit).await
    }
    async fn insert_batch(&self, batch: &Batch) -> StoreResult<()> {
        self.inner.insert_batch(batch).await
    }
    async fn get_batch(&self, batch_id: &str, now: DateTime<Utc>) -> StoreResult<Option<Batch>> {
        self.inner.get_batch(batch_id, now).await
    }
    async fn update_batch(&self, batch: &Batch) -> StoreResult<Write> {
        self.inner.update_batch(batch).await
    }
    async fn put_cache_entry(&self, entry: &CacheEntry) -> StoreResult<Write> {
        self.inner.put_cache_entry(entry).await
    }
    async fn get_cache_entry(
        &self,
        key: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<CacheEntry>> {
        self.inner.get_cache_entry(key, now).await
    }
    async fn cache_entries(&self, now: DateTime<Utc>) -> StoreResult<Vec<CacheEntry>> {
        self.inner.cache_entries(now).await
    }
    async fn delete_cache_entry(&self, key: &str) -> StoreResult<()> {
        self.inner.delete_cache_entry(key).await
    }
    async fn count_cache(&self, counter: CacheCounter) -> StoreResult<()> {
        self.inner.count_cache(counter).await
    }
    async fn cache_counters(&self) -> StoreResult<CacheCounters> {
        self.inner.cache_counters().await
    }
    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    store: Arc<Faulty>,
    queue: Arc<vacal_local::SqliteStore>,
    service: JobService,
    handler: Arc<Handler>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (sqlite, results) = vacal_local::open(dir.path()).unwrap();
    let sqlite = Arc::new(sqlite);
    let store = Arc::new(Faulty {
        inner: sqlite.clone(),
        unavailable: Mutex::default(),
        panics: Mutex::default(),
    });
    let ports = Ports {
        store: store.clone(),
        queue: sqlite.clone(),
        results: Arc::new(results),
        clock: Arc::new(SystemClock),
        ids: Arc::new(RandomIds),
    };
    let config = Config::default();
    Setup {
        _dir: dir,
        store,
        queue: sqlite,
        service: JobService::new(ports.clone(), config.clone()),
        handler: Handler::new(ports, config, 2),
    }
}

/// A quick but real calibration (the bundled example data).
fn quick_request() -> Value {
    json!({"age_group": "neonate", "country": "Mozambique", "mcmc": {"n_mcmc": 400, "n_burn": 400}})
}

impl Setup {
    async fn create(&self) -> String {
        self.service
            .create_job(&quick_request())
            .await
            .expect("create_job")
            .job_id
    }

    /// Takes the create's own message off the local queue: the test delivers by event.
    async fn drain_queue(&self) {
        for d in self
            .queue
            .receive(100, std::time::Duration::from_secs(60))
            .await
            .unwrap()
        {
            self.queue.ack(&d.receipt).await.unwrap();
        }
    }

    async fn status(&self, job_id: &str) -> JobStatus {
        self.store
            .inner
            .get_job(job_id, Utc::now())
            .await
            .unwrap()
            .expect("job exists")
            .status
    }
}

/// An SQS event as Lambda delivers it, one record per `(message_id, body)`.
fn sqs_event(records: &[(&str, &str)]) -> SqsEvent {
    let records: Vec<Value> = records
        .iter()
        .map(|(id, body)| {
            json!({
                "messageId": id,
                "receiptHandle": format!("AQEB{id}"),
                "body": body,
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": "1705328700000",
                    "SenderId": "AIDAEXAMPLE",
                    "ApproximateFirstReceiveTimestamp": "1705328700001"
                },
                "messageAttributes": {},
                "md5OfBody": "0",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:vacal-normal",
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).expect("an SQS event")
}

fn failed_ids(response: &SqsBatchResponse) -> Vec<String> {
    let mut ids: Vec<String> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_record_runs_its_job_to_success() {
    let s = setup();
    let job = s.create().await;
    s.drain_queue().await;
    let body = json!({"job_id": job}).to_string();
    let response = s.handler.batch(sqs_event(&[("m-1", &body)])).await;
    assert!(failed_ids(&response).is_empty(), "{response:?}");
    assert_eq!(s.status(&job).await, JobStatus::Success);
    let result = s.service.job_result(&job).await.expect("a result");
    let vacal_contract::CalibrationResult::Success(success) = result.result else {
        panic!("a success result: {:?}", result.result)
    };
    assert!(!success.output.calibrated.is_empty(), "{success:?}");
    // The response serialises as Lambda expects it.
    let wire = serde_json::to_value(&response).unwrap();
    assert_eq!(wire, json!({"batchItemFailures": []}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_record_is_isolated_and_only_transient_failures_are_reported() {
    let s = setup();
    let ok = s.create().await;
    let outage = s.create().await;
    let boom = s.create().await;
    s.drain_queue().await;
    s.store.unavailable.lock().unwrap().insert(outage.clone());
    s.store.panics.lock().unwrap().insert(boom.clone());
    let bodies = [
        json!({"job_id": ok, "priority": 5}).to_string(),
        json!({"job_id": outage}).to_string(),
        json!({"job_id": boom}).to_string(),
        "this is not JSON".to_string(),
        json!({"job_id": "job_0000deadbeef"}).to_string(),
    ];
    let records: Vec<(&str, &str)> = ["ok", "outage", "panic", "malformed", "unknown"]
        .into_iter()
        .zip(bodies.iter().map(String::as_str))
        .collect();
    let response = s.handler.batch(sqs_event(&records)).await;
    assert_eq!(
        failed_ids(&response),
        vec!["outage".to_string(), "panic".to_string()],
        "a storage error and a panic are retried; malformed and unknown are acked"
    );
    assert_eq!(s.status(&ok).await, JobStatus::Success);
    assert_eq!(s.status(&outage).await, JobStatus::Pending);

    // Once the outage is over, the redelivery runs the job.
    s.store.unavailable.lock().unwrap().clear();
    let body = json!({"job_id": outage}).to_string();
    let response = s.handler.batch(sqs_event(&[("outage", &body)])).await;
    assert!(failed_ids(&response).is_empty(), "{response:?}");
    assert_eq!(s.status(&outage).await, JobStatus::Success);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_delivery_of_a_finished_job_is_acked_without_rerunning() {
    let s = setup();
    let job = s.create().await;
    s.drain_queue().await;
    let body = json!({"job_id": job}).to_string();
    s.handler.batch(sqs_event(&[("first", &body)])).await;
    let logs_before = s.store.inner.logs(&job, None, 0, 1000).await.unwrap().len();
    let response = s.handler.batch(sqs_event(&[("again", &body)])).await;
    assert!(failed_ids(&response).is_empty());
    assert_eq!(s.status(&job).await, JobStatus::Success);
    let logs_after = s.store.inner.logs(&job, None, 0, 1000).await.unwrap().len();
    assert_eq!(logs_before, logs_after, "a finished job must not run again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_held_by_another_worker_is_requeued_with_a_delay_not_failed() {
    let s = setup();
    let job = s.create().await;
    s.drain_queue().await;
    // Another worker claimed it a moment ago (its lease runs for minutes).
    let mut held = s
        .store
        .inner
        .get_job(&job, Utc::now())
        .await
        .unwrap()
        .unwrap();
    held.status = JobStatus::Running;
    held.lease_until = Some(Utc::now() + chrono::Duration::seconds(120));
    held.version += 1;
    assert_eq!(s.store.inner.update_job(&held).await.unwrap(), Write::Done);
    let body = json!({"job_id": job}).to_string();
    let response = s.handler.batch(sqs_event(&[("held", &body)])).await;
    assert!(
        failed_ids(&response).is_empty(),
        "waiting must not count towards the dead-letter limit"
    );
    assert_eq!(s.status(&job).await, JobStatus::Running);
    assert_eq!(
        s.queue.depth().await.unwrap(),
        1,
        "a fresh, delayed message for the job"
    );
}

/// An SQS event of `events/` (shared with `cargo lambda invoke`), with the example job
/// IDs of its bodies replaced by real ones.
fn shipped(text: &str, ids: &[(&str, &str)]) -> SqsEvent {
    let mut text = text.to_string();
    for (example, id) in ids {
        text = text.replace(example, id);
    }
    serde_json::from_str(&text).expect("an SQS event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_single_event_runs_its_job() {
    let s = setup();
    let job = s.create().await;
    s.drain_queue().await;
    let event = shipped(
        include_str!("../../../events/sqs-single.json"),
        &[("job_3f9a0c1b2d4e", &job)],
    );
    assert_eq!(event.records.len(), 1);
    let response = s.handler.batch(event).await;
    assert!(failed_ids(&response).is_empty(), "{response:?}");
    assert_eq!(s.status(&job).await, JobStatus::Success);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_batch_with_a_malformed_body_fails_only_the_transient_record() {
    let s = setup();
    let ok = s.create().await;
    let outage = s.create().await;
    s.drain_queue().await;
    s.store.unavailable.lock().unwrap().insert(outage.clone());
    let event = shipped(
        include_str!("../../../events/sqs-batch-with-malformed.json"),
        &[("job_0a1b2c3d4e5f", &ok), ("job_9e8d7c6b5a40", &outage)],
    );
    assert_eq!(event.records.len(), 3);
    let third = event.records[2].message_id.clone().unwrap();
    let response = s.handler.batch(event).await;
    assert_eq!(
        failed_ids(&response),
        vec![third],
        "the malformed record is dropped, the outage retried"
    );
    assert_eq!(s.status(&ok).await, JobStatus::Success);
    assert_eq!(s.status(&outage).await, JobStatus::Pending);
}
