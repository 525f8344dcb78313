//! Jobs, batches, logs, cache entries and their states (api-reference §5–§8).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
/// The wire types the domain shares with the API, defined once in the contract.
pub use vacal_contract::{BatchStatus, ErrorDetails, JobStatus, JobType, LogLevel};

/// Steps of a job's progress (api-reference §6.3); `total_steps` is always 5.
pub const TOTAL_STEPS: u32 = 5;

/// RFC 3339 in UTC with a `Z` and microseconds, the API's timestamp format.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobProgress {
    pub current_step: u32,
    pub step_name: String,
}

impl JobProgress {
    pub fn new(current_step: u32, step_name: &str) -> Self {
        JobProgress {
            current_step,
            step_name: step_name.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheInfo {
    pub cached_at: DateTime<Utc>,
    pub source_job_id: String,
}

/// A job as stored. Every change is a conditional write on `version` that can lose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub job_id: String,
    pub job_type: JobType,
    pub status: JobStatus,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub timeout_at: DateTime<Utc>,
    pub priority: u8,
    pub retry_count: u32,
    pub max_retries: u32,
    pub batch_id: Option<String>,
    /// The normalised engine request (va_data reduced to counts), as JSON.
    pub request: Value,
    pub age_group: Option<String>,
    pub country: Option<String>,
    pub use_cache: bool,
    pub cache_key: String,
    pub progress: JobProgress,
    pub error: Option<ErrorDetails>,
    /// Where the result lives in the result store (the cache key), once successful.
    pub result_key: Option<String>,
    pub completed_result_at: Option<DateTime<Utc>>,
    pub cache_info: Option<CacheInfo>,
    /// A worker holds the job until then; after it, the job may be claimed again.
    pub lease_until: Option<DateTime<Utc>>,
    /// Times a worker claimed the job.
    pub attempts: u32,
    /// Whether the job's message has been put on the queue (batch members wait for a slot).
    pub queued: bool,
    pub expires_at: DateTime<Utc>,
    pub version: u64,
}

impl Job {
    /// The earliest instant at which the janitor has something to do with this job, `None`
    /// once it is terminal: its timeout; for a running job also its lease expiry; and at
    /// once for a batch member waiting for its slot (the janitor re-checks the batch).
    /// Stores may index it, so the janitor reads only the jobs that are due.
    pub fn janitor_due_at(&self) -> Option<DateTime<Utc>> {
        match self.status {
            JobStatus::Pending if self.batch_id.is_some() && !self.queued => {
                Some(DateTime::<Utc>::MIN_UTC)
            }
            JobStatus::Pending => Some(self.timeout_at),
            JobStatus::Running => Some(
                self.lease_until
                    .map_or(DateTime::<Utc>::MIN_UTC, |l| l.min(self.timeout_at)),
            ),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub batch_id: String,
    pub batch_name: Option<String>,
    pub job_ids: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub parallel_limit: u32,
    pub fail_fast: bool,
    /// Members holding one of the `parallel_limit` running slots.
    pub running: Vec<String>,
    pub expires_at: DateTime<Utc>,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    pub timestamp: DateTime<Utc>,
    pub level: LogLevel,
    pub message: String,
    pub component: Option<String>,
    pub data: Option<Value>,
}

impl LogEntry {
    pub fn new(
        at: DateTime<Utc>,
        level: LogLevel,
        component: &str,
        message: impl Into<String>,
    ) -> Self {
        LogEntry {
            timestamp: at,
            level,
            message: message.into(),
            component: Some(component.to_string()),
            data: None,
        }
    }
}

/// The cache index entry of a computed result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    pub cache_key: String,
    pub result_key: String,
    pub size_bytes: u64,
    pub cached_at: DateTime<Utc>,
    pub source_job_id: String,
    pub age_group: Option<String>,
    pub country: Option<String>,
    pub expires_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_never_change_and_nothing_returns_to_pending() {
        for from in JobStatus::ALL {
            for to in JobStatus::ALL {
                let legal = from.can_become(to);
                if from.is_terminal() || to == JobStatus::Pending {
                    assert!(!legal, "{from:?} → {to:?}");
                }
            }
        }
        assert!(JobStatus::Pending.can_become(JobStatus::Success));
        assert!(JobStatus::Running.can_become(JobStatus::Timeout));
        assert!(!JobStatus::Running.can_become(JobStatus::Running));
    }

    #[test]
    fn timestamps_are_utc_with_z() {
        let t = DateTime::parse_from_rfc3339("2024-01-15T14:25:00.5+02:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(timestamp(t), "2024-01-15T12:25:00.500000Z");
    }
}
