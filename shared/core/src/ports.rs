//! The ports the core needs from a deployment: storage of jobs and their satellites, a
//! queue, a result store, a clock and IDs. Local mode implements them on SQLite and files,
//! AWS on DynamoDB, SQS and S3; both pass the conformance suite (`testing` feature).

use std::any::Any;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{Batch, CacheEntry, Job, JobStatus, LogEntry, LogLevel};

/// A storage or queue failure. `Unavailable` is transient (retry); `Conflict` means a
/// conditional write lost; `Other` is a bug or a permanent fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Other(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Outcome of a conditional write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    Done,
    /// The stored version was not the expected one (or the item is gone): nothing changed.
    Lost,
}

/// Why [`JobStore::insert_job_queued`] failed, and how far it got.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InsertQueuedError {
    /// Nothing was stored (the ID exists, or storage failed).
    #[error("{0}")]
    NotStored(StoreError),
    /// The job is stored but its message could not be sent: unless the caller settles it,
    /// it stays pending until its timeout.
    #[error("{0}")]
    NotQueued(StoreError),
}

/// Filters of `GET /api/v1/jobs` (§9); `None` = no filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    pub job_type: Option<String>,
    pub age_group: Option<String>,
    /// Compared case-insensitively.
    pub country: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub batch_id: Option<String>,
}

/// Hit and miss counts of cache look-ups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheCounters {
    pub hits: u64,
    pub misses: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheCounter {
    Hit,
    Miss,
}

/// Jobs, logs, batches, the cache index and counters. Expired items (`expires_at ≤ now`)
/// are never returned, whether or not they were physically deleted yet.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Creates a job; fails with `Other` if the ID exists.
    async fn insert_job(&self, job: &Job) -> StoreResult<()>;
    async fn get_job(&self, job_id: &str, now: DateTime<Utc>) -> StoreResult<Option<Job>>;
    /// Replaces the job if its stored version is `job.version - 1`.
    async fn update_job(&self, job: &Job) -> StoreResult<Write>;
    /// Deletes a job with its logs; returns how many items went.
    async fn delete_job(&self, job_id: &str) -> StoreResult<u64>;
    /// Matching jobs, newest first (ties by job_id), and the total count.
    async fn list_jobs(
        &self,
        filter: &JobFilter,
        offset: u64,
        limit: u64,
        now: DateTime<Utc>,
    ) -> StoreResult<(Vec<Job>, u64)>;
    /// Jobs in one of `statuses` created at or after `since` (metrics, janitor).
    async fn jobs_by_status(
        &self,
        statuses: &[JobStatus],
        since: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Job>>;

    /// Creates a job with its first log entries (in order, trimmed to `max_log_entries`)
    /// and, if `job.queued`, sends its message to `queue` (priority `job.priority`, no
    /// delay). The default composes `insert_job`, `append_log` and `queue.send`: a log
    /// entry that fails is only warned about, and a crash between the steps can leave the
    /// job stored without its message (the job then times out). A store whose queue lives
    /// in the same database overrides it with one atomic write: one commit per create, and
    /// no such gap.
    async fn insert_job_queued(
        &self,
        job: &Job,
        logs: &[LogEntry],
        max_log_entries: u64,
        queue: &dyn JobQueue,
    ) -> Result<(), InsertQueuedError> {
        insert_job_queued_in_steps(self, job, logs, max_log_entries, queue).await
    }

    /// Open jobs the janitor may have to act on at `now`: at least every live job whose
    /// [`Job::janitor_due_at`] is at or before `now`; more are allowed (the janitor checks
    /// each). The default filters `jobs_by_status`; a store that indexes the due instant
    /// reads only those jobs.
    async fn jobs_due(&self, now: DateTime<Utc>) -> StoreResult<Vec<Job>> {
        let open = self
            .jobs_by_status(&[JobStatus::Pending, JobStatus::Running], None, now)
            .await?;
        Ok(open
            .into_iter()
            .filter(|j| j.janitor_due_at().is_some_and(|due| due <= now))
            .collect())
    }

    /// Appends a log entry, keeping at most `max_entries` per job (oldest dropped).
    async fn append_log(&self, job_id: &str, entry: &LogEntry, max_entries: u64)
        -> StoreResult<()>;
    /// Logs newest first, filtered by `level`, then paged.
    async fn logs(
        &self,
        job_id: &str,
        level: Option<LogLevel>,
        offset: u64,
        limit: u64,
    ) -> StoreResult<Vec<LogEntry>>;

    async fn insert_batch(&self, batch: &Batch) -> StoreResult<()>;
    async fn get_batch(&self, batch_id: &str, now: DateTime<Utc>) -> StoreResult<Option<Batch>>;
    /// Replaces the batch if its stored version is `batch.version - 1` (the running-slot set
    /// changes only through this).
    async fn update_batch(&self, batch: &Batch) -> StoreResult<Write>;

    /// Stores the entry unless one with the same key is live; `Lost` if one is.
    async fn put_cache_entry(&self, entry: &CacheEntry) -> StoreResult<Write>;
    async fn get_cache_entry(
        &self,
        cache_key: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<CacheEntry>>;
    async fn cache_entries(&self, now: DateTime<Utc>) -> StoreResult<Vec<CacheEntry>>;
    async fn delete_cache_entry(&self, cache_key: &str) -> StoreResult<()>;
    async fn count_cache(&self, counter: CacheCounter) -> StoreResult<()>;
    async fn cache_counters(&self) -> StoreResult<CacheCounters>;

    /// Cheap round trip for the health check.
    async fn ping(&self) -> StoreResult<()>;
}

/// One delivery of a queue message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub job_id: String,
    /// Opaque handle for `ack` / `release`.
    pub receipt: String,
    /// 1 on the first delivery.
    pub receive_count: u32,
}

/// At-least-once delivery with visibility timeouts, higher priority first (best effort),
/// FIFO within a priority.
#[async_trait]
pub trait JobQueue: Send + Sync {
    async fn send(&self, job_id: &str, priority: u8, delay: Duration) -> StoreResult<()>;
    /// Up to `max` messages, each hidden for `visibility` unless acked.
    async fn receive(&self, max: u32, visibility: Duration) -> StoreResult<Vec<Delivery>>;
    async fn ack(&self, receipt: &str) -> StoreResult<()>;
    /// Makes the message visible again after `delay`.
    async fn release(&self, receipt: &str, delay: Duration) -> StoreResult<()>;
    /// Messages waiting or in flight (health).
    async fn depth(&self) -> StoreResult<u64>;

    /// Returns when a message may have become receivable, at the latest after `timeout`;
    /// an idle worker calls it after an empty `receive`. The default sleeps (polling); a
    /// queue that hears of sends made in this process returns as soon as one is made.
    async fn wait(&self, timeout: Duration) {
        tokio::time::sleep(timeout).await
    }

    /// The adapter itself, so that a store sharing its database can recognise it (see
    /// [`JobStore::insert_job_queued`]). `None`, the default, means "never".
    fn as_any(&self) -> Option<&dyn Any> {
        None
    }
}

/// Appends one entry to a job's log. A lost log line must not fail the step that writes it,
/// so a failure is traced and otherwise ignored.
pub async fn append_log_or_warn<S: JobStore + ?Sized>(
    store: &S,
    job_id: &str,
    entry: &LogEntry,
    max_log_entries: u64,
) {
    if let Err(e) = store.append_log(job_id, entry, max_log_entries).await {
        tracing::warn!(job_id, error = %e, "could not write a job log entry");
    }
}

/// The default of [`JobStore::insert_job_queued`], step by step; also the fallback of
/// stores that override it for a queue of their own.
pub async fn insert_job_queued_in_steps<S: JobStore + ?Sized>(
    store: &S,
    job: &Job,
    logs: &[LogEntry],
    max_log_entries: u64,
    queue: &dyn JobQueue,
) -> Result<(), InsertQueuedError> {
    store
        .insert_job(job)
        .await
        .map_err(InsertQueuedError::NotStored)?;
    for entry in logs {
        append_log_or_warn(store, &job.job_id, entry, max_log_entries).await;
    }
    if job.queued {
        queue
            .send(&job.job_id, job.priority, Duration::ZERO)
            .await
            .map_err(InsertQueuedError::NotQueued)?;
    }
    Ok(())
}

/// The longest result key a store accepts (a cache key is 64).
pub const MAX_RESULT_KEY_LEN: usize = 128;

/// Refuses a result key that is not 1-128 lowercase hex characters. Every result store
/// checks this: a key becomes a file or object name, so no path tricks, and no two keys that
/// a case-insensitive file system would confuse.
pub fn check_result_key(key: &str) -> StoreResult<()> {
    let valid = !key.is_empty()
        && key.len() <= MAX_RESULT_KEY_LEN
        && key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if valid {
        Ok(())
    } else {
        Err(StoreError::Other(format!(
            "invalid result key {key:?}: expected 1-{MAX_RESULT_KEY_LEN} lowercase hex characters"
        )))
    }
}

/// Results by key (the cache key), written once.
#[async_trait]
pub trait ResultStore: Send + Sync {
    /// Stores `bytes` unless `key` exists (then it is left as it is, and that is success).
    async fn put_if_absent(&self, key: &str, bytes: &[u8]) -> StoreResult<()>;
    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>>;
    async fn delete(&self, key: &str) -> StoreResult<()>;
}

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

pub trait IdGenerator: Send + Sync {
    /// 12 lowercase hex characters.
    fn hex12(&self) -> String;
}

/// Random IDs from the OS-seeded thread RNG.
pub struct RandomIds;

impl IdGenerator for RandomIds {
    fn hex12(&self) -> String {
        use rand::RngExt;
        let bytes: [u8; 6] = rand::rng().random();
        hex::encode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_keys_are_short_lowercase_hex() {
        assert!(check_result_key(&"ab".repeat(32)).is_ok());
        assert!(check_result_key(&"a".repeat(MAX_RESULT_KEY_LEN)).is_ok());
        for bad in [
            "",
            "../etc",
            "ABCDEF",
            "abc.json",
            &"a".repeat(MAX_RESULT_KEY_LEN + 1),
        ] {
            assert!(
                matches!(check_result_key(bad), Err(StoreError::Other(_))),
                "{bad:?}"
            );
        }
    }
}
