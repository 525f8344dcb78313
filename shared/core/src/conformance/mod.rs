//! The port conformance suite (`testing` feature): one set of behavioural checks that every
//! adapter family runs, so SQLite and DynamoDB/SQS/S3 cannot drift apart. A behaviour that
//! differs between them is a bug in one of them.
//!
//! Each suite takes a factory that builds a fresh, empty adapter; every check gets its own,
//! so checks never see each other's data (totals, queue depth). Run it from a
//! `#[tokio::test]` (any flavour, real time: the queue checks sleep for real, because a
//! queue keeps its own clock; do not use `start_paused`):
//!
//! ```ignore
//! #[tokio::test]
//! async fn conformance() {
//!     vacal_core::conformance::run_all(|| async { make_adapters().await }).await;
//! }
//! ```
//!
//! A failing check panics with a message naming the check; the check about to run is also
//! printed to stderr (`conformance: <name>`), which the test harness shows on failure.
//!
//! Conventions the adapters can rely on: expiry instants (`expires_at`, `now`) are whole
//! seconds, so a store that keeps TTLs as epoch seconds passes; other timestamps have
//! microsecond precision (the API's), and must round-trip exactly at that precision. Times
//! are relative to the real clock, so a store that also drops expired items by wall-clock
//! time (DynamoDB TTL) agrees with the checks.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use tokio::task::JoinSet;

use crate::domain::{
    Batch, CacheEntry, CacheInfo, ErrorDetails, Job, JobProgress, JobStatus, JobType, LogEntry,
    LogLevel,
};
use crate::ports::{
    CacheCounter, CacheCounters, Delivery, InsertQueuedError, JobFilter, JobQueue, JobStore,
    ResultStore, StoreError, Write,
};

mod create;
mod job_store;
mod queue;
mod results;

use create::*;
use job_store::*;
use queue::*;
use results::*;

/// One fresh set of adapters, as a deployment wires them.
#[derive(Clone)]
pub struct Adapters {
    pub jobs: Arc<dyn JobStore>,
    pub queue: Arc<dyn JobQueue>,
    pub results: Arc<dyn ResultStore>,
}

/// How strictly the queue checks judge timing and ordering.
#[derive(Debug, Clone)]
pub struct SuiteConfig {
    /// The unit of every queue duration (visibility, delay, release). 200 ms keeps the
    /// suite fast; a queue with coarser timers (SQS counts whole seconds) needs 1 s.
    pub tick: Duration,
    /// Exact priority/FIFO order, and a stale receipt (from an earlier delivery) never acks
    /// the current one. The port promises both only as best effort, so a cloud queue may
    /// turn this off; then only "the highest priority comes first" and "every message is
    /// delivered" are checked, and stale acks must merely not fail.
    pub strict_queue: bool,
}

impl Default for SuiteConfig {
    fn default() -> Self {
        SuiteConfig {
            tick: Duration::from_millis(200),
            strict_queue: true,
        }
    }
}

/// Every check of the three ports with the default configuration; `make` builds a fresh,
/// empty set of adapters (it is called once per check).
pub async fn run_all<F, Fut>(make: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Adapters>,
{
    run_all_with(&SuiteConfig::default(), make).await
}

/// [`run_all`] with an explicit configuration.
pub async fn run_all_with<F, Fut>(config: &SuiteConfig, mut make: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Adapters>,
{
    job_store_suite(|| {
        let adapters = make();
        async move { adapters.await.jobs }
    })
    .await;
    queue_suite(config, || {
        let adapters = make();
        async move { adapters.await.queue }
    })
    .await;
    result_store_suite(|| {
        let adapters = make();
        async move { adapters.await.results }
    })
    .await;
    create_suite(&mut make).await;
}

/// Checks that need a store and its queue together (`JobStore::insert_job_queued`, with
/// the queue the deployment wires beside the store); `make` builds fresh adapters.
pub async fn create_suite<F, Fut>(mut make: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Adapters>,
{
    announce("insert_job_queued_stores_logs_and_queues");
    insert_job_queued_stores_logs_and_queues(make().await).await;
    announce("insert_job_queued_held_job_is_not_queued");
    insert_job_queued_held_job_is_not_queued(make().await).await;
}

/// Checks of `JobStore`; `make` builds a fresh, empty store.
pub async fn job_store_suite<F, Fut>(mut make: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Arc<dyn JobStore>>,
{
    announce("job_round_trip");
    job_round_trip(make().await).await;
    announce("duplicate_insert_fails");
    duplicate_insert_fails(make().await).await;
    announce("expired_jobs_are_invisible");
    expired_jobs_are_invisible(make().await).await;
    announce("conditional_update");
    conditional_update(make().await).await;
    announce("concurrent_updates_one_wins");
    concurrent_updates_one_wins(make().await).await;
    announce("delete_job_with_logs");
    delete_job_with_logs(make().await).await;
    announce("list_jobs_filters_order_paging");
    list_jobs_filters_order_paging(make().await).await;
    announce("jobs_by_status");
    jobs_by_status(make().await).await;
    announce("jobs_due");
    jobs_due(make().await).await;
    announce("logs_order_filter_paging");
    logs_order_filter_paging(make().await).await;
    announce("logs_trimmed_to_newest");
    logs_trimmed_to_newest(make().await).await;
    announce("batch_round_trip");
    batch_round_trip(make().await).await;
    announce("conditional_batch_update");
    conditional_batch_update(make().await).await;
    announce("cache_entries");
    cache_entries(make().await).await;
    announce("counters_are_atomic");
    counters_are_atomic(make().await).await;
    announce("ping");
    make()
        .await
        .ping()
        .await
        .expect("ping: the store must answer");
}

/// Checks of `JobQueue`; `make` builds a fresh, empty queue. Takes about 10 ticks.
pub async fn queue_suite<F, Fut>(config: &SuiteConfig, mut make: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Arc<dyn JobQueue>>,
{
    announce("queue_send_receive_ack");
    queue_send_receive_ack(make().await).await;
    announce("queue_visibility_timeout");
    queue_visibility_timeout(config, make().await).await;
    announce("queue_release");
    queue_release(config, make().await).await;
    announce("queue_priority_order");
    queue_priority_order(config, make().await).await;
    announce("queue_delayed_send");
    queue_delayed_send(config, make().await).await;
}

/// Checks of `ResultStore`; `make` builds a fresh, empty store.
pub async fn result_store_suite<F, Fut>(mut make: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Arc<dyn ResultStore>>,
{
    announce("results_put_get_delete");
    results_put_get_delete(make().await).await;
    announce("results_concurrent_puts");
    results_concurrent_puts(make().await).await;
}

/// A plausible pending job created at `created_at`, live for a day; every optional field
/// that a fresh job has is set as the API sets it. Tests change what they need.
pub fn sample_job(job_id: &str, created_at: DateTime<Utc>) -> Job {
    Job {
        job_id: job_id.to_string(),
        job_type: JobType::Calibration,
        status: JobStatus::Pending,
        created_at,
        started_at: None,
        completed_at: None,
        timeout_at: created_at + TimeDelta::minutes(30),
        priority: 5,
        retry_count: 0,
        max_retries: 3,
        batch_id: None,
        request: json!({
            "age_group": "neonate",
            "country": "Mozambique",
            "counts": {"insilicova": [10, 20, 30, 5, 1]},
            "mmat_type": "prior",
            "ensemble": true
        }),
        age_group: Some("neonate".to_string()),
        country: Some("Mozambique".to_string()),
        use_cache: false,
        cache_key: "ab".repeat(32),
        progress: JobProgress::new(0, "Queued"),
        error: None,
        result_key: None,
        completed_result_at: None,
        cache_info: None,
        lease_until: None,
        attempts: 0,
        queued: true,
        expires_at: whole_seconds(created_at) + TimeDelta::days(1),
        version: 1,
    }
}

fn announce(check: &str) {
    eprintln!("conformance: {check}");
}

/// The current time, truncated to whole seconds (see the module doc).
fn base_now() -> DateTime<Utc> {
    whole_seconds(Utc::now())
}

fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).expect("a representable time")
}

fn ids(jobs: &[Job]) -> Vec<&str> {
    jobs.iter().map(|j| j.job_id.as_str()).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// A job with every field set to something other than its default.
fn full_job(job_id: &str, now: DateTime<Utc>) -> Job {
    let created = now - TimeDelta::minutes(3) + TimeDelta::microseconds(123_456);
    Job {
        job_id: job_id.to_string(),
        job_type: JobType::BatchCalibration,
        status: JobStatus::Running,
        created_at: created,
        started_at: Some(created + TimeDelta::microseconds(1_500_001)),
        completed_at: Some(created + TimeDelta::microseconds(90_000_007)),
        timeout_at: created + TimeDelta::minutes(45),
        priority: 9,
        retry_count: 2,
        max_retries: 4,
        batch_id: Some("batch_0123456789ab".to_string()),
        request: json!({
            "age_group": "child",
            "country": "Côte d'Ivoire",
            "counts": {"eava": [1, 2, 3], "insilicova": [0, 0, 7]},
            "settings": {"seed": 42, "thin": 0.1, "nested": [null, true, "x"]}
        }),
        age_group: Some("child".to_string()),
        country: Some("Côte d'Ivoire".to_string()),
        use_cache: true,
        cache_key: "0f".repeat(32),
        progress: JobProgress::new(3, "Running R calibration"),
        error: Some(ErrorDetails {
            error_type: "EngineError".to_string(),
            error_message: "something \"quoted\"\nand a new line".to_string(),
            traceback: Some("at step 3".to_string()),
        }),
        result_key: Some("0f".repeat(32)),
        completed_result_at: Some(created + TimeDelta::microseconds(90_000_008)),
        cache_info: Some(CacheInfo {
            cached_at: created - TimeDelta::microseconds(1),
            source_job_id: "job_fedcba987654".to_string(),
        }),
        lease_until: Some(created + TimeDelta::minutes(10)),
        attempts: 3,
        queued: false,
        expires_at: now + TimeDelta::days(1),
        version: 7,
    }
}
