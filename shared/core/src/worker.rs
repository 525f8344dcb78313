//! `Worker`: runs one job per queue message, idempotently. Any message may arrive twice and
//! any step may crash and be retried: every state change is a conditional write, a claim
//! holds a lease that a heartbeat renews, and a late result never overwrites a terminal
//! state.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use vacal_contract::CalibrationOutput;
use vacal_engine::{calibrate, panic_message, CalibrationRequest, EngineError};

use crate::request::parse_request;
use crate::result::calibration_output;

use crate::config::Config;
use crate::domain::{
    CacheEntry, CacheInfo, ErrorDetails, Job, JobProgress, JobStatus, LogEntry, LogLevel,
};
use crate::ports::{append_log_or_warn, CacheCounter, Delivery, StoreError, Write};
use crate::service::{finish_job, Ports};

/// What to do with the message that carried a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done with it (the job is terminal, gone, or waits for a batch follow-up).
    Ack,
    /// Deliver it again after this delay.
    Retry(Duration),
}

/// Longest an idle worker waits before it looks at the queue again. Sends made in this
/// process wake it at once (`JobQueue::wait`); this poll finds delayed and redelivered
/// messages, and sends from other processes.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// Delay before a batch member without a free slot is tried again.
const NO_SLOT_RETRY: Duration = Duration::from_secs(2);

fn chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

async fn log(
    ports: &Ports,
    config: &Config,
    job_id: &str,
    level: LogLevel,
    component: &str,
    message: String,
) {
    let entry = LogEntry::new(ports.clock.now(), level, component, message);
    append_log_or_warn(ports.store.as_ref(), job_id, &entry, config.max_log_entries).await;
}

/// Fails a job that is not terminal yet with `error_type` and `message`, logs it as
/// `component` and does what follows every terminal transition. Whether this call failed it
/// (false: it had already ended).
pub async fn fail_job(
    ports: &Ports,
    config: &Config,
    job_id: &str,
    component: &str,
    error_type: &str,
    message: String,
) -> Result<bool, StoreError> {
    let now = ports.clock.now();
    let ended = finish_job(ports, job_id, JobStatus::Failed, |j| {
        j.completed_at = Some(now);
        j.error = Some(ErrorDetails {
            error_type: error_type.into(),
            error_message: message.clone(),
            traceback: None,
        });
    })
    .await?;
    let Some((job, true)) = ended else {
        return Ok(false);
    };
    let entry = format!("Job failed: {message}");
    log(ports, config, job_id, LogLevel::Error, component, entry).await;
    after_terminal(ports, config, &job).await?;
    Ok(true)
}

/// Member indices in the order they may start: higher priority first, then submission order.
pub fn admission_order(members: &[Job]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(members[i].priority), i));
    order
}

/// Follow-ups once a job reached a terminal state: free its batch slot, apply fail_fast,
/// and queue the next waiting members.
pub async fn after_terminal(ports: &Ports, config: &Config, job: &Job) -> Result<(), StoreError> {
    let Some(batch_id) = &job.batch_id else {
        return Ok(());
    };
    release_slot(ports, batch_id, &job.job_id).await?;
    let now = ports.clock.now();
    let Some(batch) = ports.store.get_batch(batch_id, now).await? else {
        return Ok(());
    };
    if batch.fail_fast && matches!(job.status, JobStatus::Failed | JobStatus::Timeout) {
        for member in batch.job_ids.iter().filter(|id| **id != job.job_id) {
            let ended = finish_job(ports, member, JobStatus::Cancelled, |j| {
                j.completed_at = Some(now)
            })
            .await?;
            if let Some((cancelled, true)) = ended {
                log(
                    ports,
                    config,
                    member,
                    LogLevel::Warning,
                    "worker",
                    format!(
                        "Cancelled: batch {batch_id} fail_fast triggered by {}",
                        job.job_id
                    ),
                )
                .await;
                release_slot(ports, batch_id, &cancelled.job_id).await?;
            }
        }
        return Ok(());
    }
    admit_waiting(ports, batch_id).await
}

async fn release_slot(ports: &Ports, batch_id: &str, job_id: &str) -> Result<(), StoreError> {
    loop {
        let Some(mut batch) = ports.store.get_batch(batch_id, ports.clock.now()).await? else {
            return Ok(());
        };
        if !batch.running.iter().any(|id| id == job_id) {
            return Ok(());
        }
        batch.running.retain(|id| id != job_id);
        batch.version += 1;
        if ports.store.update_batch(&batch).await? == Write::Done {
            return Ok(());
        }
    }
}

/// Queues waiting members of a batch while fewer than `parallel_limit` are queued or
/// running. Also the janitor's repair for a lost follow-up.
pub async fn admit_waiting(ports: &Ports, batch_id: &str) -> Result<(), StoreError> {
    let now = ports.clock.now();
    let Some(batch) = ports.store.get_batch(batch_id, now).await? else {
        return Ok(());
    };
    let mut members = Vec::with_capacity(batch.job_ids.len());
    for id in &batch.job_ids {
        if let Some(job) = ports.store.get_job(id, now).await? {
            members.push(job);
        }
    }
    let active = members
        .iter()
        .filter(|j| !j.status.is_terminal() && j.queued)
        .count();
    let free = (batch.parallel_limit as usize).saturating_sub(active);
    let waiting: Vec<usize> = admission_order(&members)
        .into_iter()
        .filter(|&i| members[i].status == JobStatus::Pending && !members[i].queued)
        .take(free)
        .collect();
    for i in waiting {
        let mut job = members[i].clone();
        job.queued = true;
        job.version += 1;
        // Losing the write means someone else changed the job (cancel, admission): skip it.
        if ports.store.update_job(&job).await? == Write::Done {
            ports
                .queue
                .send(&job.job_id, job.priority, Duration::ZERO)
                .await?;
        }
    }
    Ok(())
}

/// Takes one of the batch's running slots for `job_id`; false if all are taken.
async fn acquire_slot(ports: &Ports, batch_id: &str, job_id: &str) -> Result<bool, StoreError> {
    loop {
        let now = ports.clock.now();
        let Some(mut batch) = ports.store.get_batch(batch_id, now).await? else {
            return Ok(true);
        };
        if batch.running.iter().any(|id| id == job_id) {
            return Ok(true);
        }
        // Slots of members that ended without releasing them (a crash) are reclaimed.
        let mut holders = Vec::with_capacity(batch.running.len());
        for id in &batch.running {
            let live = ports
                .store
                .get_job(id, now)
                .await?
                .is_some_and(|j| !j.status.is_terminal());
            if live {
                holders.push(id.clone());
            }
        }
        if holders.len() >= batch.parallel_limit as usize {
            return Ok(false);
        }
        holders.push(job_id.to_string());
        batch.running = holders;
        batch.version += 1;
        if ports.store.update_batch(&batch).await? == Write::Done {
            return Ok(true);
        }
    }
}

/// The engine's view of a running job: step names go to the job log, cancellation comes
/// from a flag the heartbeat sets.
struct EngineProgress {
    cancelled: Arc<AtomicBool>,
    steps: mpsc::UnboundedSender<String>,
}

impl vacal_engine::Progress for EngineProgress {
    fn step(&self, name: &str) {
        let _ = self.steps.send(name.to_string());
    }
    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

pub struct Worker {
    ports: Ports,
    config: Config,
}

enum Claim {
    Claimed(Box<Job>),
    Done(Outcome),
}

impl Worker {
    pub fn new(ports: Ports, config: Config) -> Self {
        Worker { ports, config }
    }

    async fn log(&self, job_id: &str, level: LogLevel, component: &str, message: String) {
        log(&self.ports, &self.config, job_id, level, component, message).await
    }

    /// Marks an overdue job `timeout` (unless it already ended) and runs the follow-ups.
    pub async fn time_out(&self, job_id: &str) -> Result<(), StoreError> {
        let now = self.ports.clock.now();
        let ended = finish_job(&self.ports, job_id, JobStatus::Timeout, |j| {
            let minutes = (j.timeout_at - j.created_at).num_minutes();
            j.completed_at = Some(now);
            j.error = Some(ErrorDetails {
                error_type: "Timeout".into(),
                error_message: format!("Job exceeded its timeout of {minutes} minutes"),
                traceback: None,
            });
        })
        .await?;
        if let Some((job, true)) = ended {
            self.log(job_id, LogLevel::Error, "worker", "Job timed out".into())
                .await;
            after_terminal(&self.ports, &self.config, &job).await?;
        }
        Ok(())
    }

    async fn fail(
        &self,
        job_id: &str,
        error_type: &str,
        message: String,
    ) -> Result<(), StoreError> {
        fail_job(
            &self.ports,
            &self.config,
            job_id,
            "worker",
            error_type,
            message,
        )
        .await?;
        Ok(())
    }

    async fn claim(&self, job_id: &str) -> Result<Claim, StoreError> {
        loop {
            let now = self.ports.clock.now();
            let Some(job) = self.ports.store.get_job(job_id, now).await? else {
                return Ok(Claim::Done(Outcome::Ack));
            };
            if job.status.is_terminal() {
                return Ok(Claim::Done(Outcome::Ack));
            }
            if now >= job.timeout_at {
                self.time_out(job_id).await?;
                return Ok(Claim::Done(Outcome::Ack));
            }
            if job.status == JobStatus::Running {
                if let Some(until) = job.lease_until.filter(|u| *u > now) {
                    // Another worker holds it; look again when its lease would run out.
                    let wait =
                        (until - now).to_std().unwrap_or_default() + Duration::from_millis(100);
                    return Ok(Claim::Done(Outcome::Retry(wait)));
                }
            }
            if let Some(batch_id) = &job.batch_id {
                if !acquire_slot(&self.ports, batch_id, job_id).await? {
                    return Ok(Claim::Done(Outcome::Retry(NO_SLOT_RETRY)));
                }
            }
            let mut claimed = job.clone();
            claimed.status = JobStatus::Running;
            claimed.started_at = claimed.started_at.or(Some(now));
            claimed.lease_until = Some(now + chrono(self.config.lease));
            claimed.attempts += 1;
            if claimed.progress.current_step < 1 {
                claimed.progress = JobProgress::new(1, "Initializing");
            }
            claimed.version += 1;
            if self.ports.store.update_job(&claimed).await? == Write::Done {
                let message = if job.status == JobStatus::Running {
                    "Resuming calibration job after an interrupted attempt"
                } else {
                    "Starting calibration job"
                };
                self.log(job_id, LogLevel::Info, "worker", message.into())
                    .await;
                return Ok(Claim::Claimed(Box::new(claimed)));
            }
        }
    }

    /// Updates progress of a running job; false if the job is no longer ours to run.
    async fn set_progress(&self, job: &mut Job, step: u32, name: &str) -> Result<bool, StoreError> {
        loop {
            let now = self.ports.clock.now();
            let Some(mut current) = self.ports.store.get_job(&job.job_id, now).await? else {
                return Ok(false);
            };
            if current.status != JobStatus::Running {
                return Ok(false);
            }
            if current.progress.current_step < step {
                current.progress = JobProgress::new(step, name);
            }
            current.lease_until = Some(now + chrono(self.config.lease));
            current.version += 1;
            if self.ports.store.update_job(&current).await? == Write::Done {
                *job = current;
                return Ok(true);
            }
        }
    }

    /// Processes the job a message names. A `StoreError` is transient: leave the message for
    /// redelivery.
    pub async fn process(&self, job_id: &str) -> Result<Outcome, StoreError> {
        let mut job = match self.claim(job_id).await? {
            Claim::Done(outcome) => return Ok(outcome),
            Claim::Claimed(job) => *job,
        };
        if job.use_cache {
            if let Some(outcome) = self.try_cache(&job).await? {
                return Ok(outcome);
            }
        }
        if !self.set_progress(&mut job, 2, "Preparing data").await? {
            return Ok(Outcome::Ack);
        }
        let request = match parse_request(&job.request) {
            Ok(r) => r,
            Err(e) => {
                self.fail(job_id, "ValidationError", e.to_string()).await?;
                return Ok(Outcome::Ack);
            }
        };
        if !self
            .set_progress(&mut job, 3, "Running R calibration")
            .await?
        {
            return Ok(Outcome::Ack);
        }
        self.log(
            job_id,
            LogLevel::Info,
            "engine",
            "Calibration engine started".into(),
        )
        .await;
        let outcome = self.run_engine(&job, request).await?;
        let result = match outcome {
            Ok(result) => result,
            Err(EngineError::Cancelled) => {
                // Cancelled by the user or the janitor, or overdue: never a late success.
                if self.ports.clock.now() >= job.timeout_at {
                    self.time_out(job_id).await?;
                }
                return Ok(Outcome::Ack);
            }
            Err(e @ EngineError::Invalid { .. }) => {
                self.fail(job_id, "CalibrationError", e.to_string()).await?;
                return Ok(Outcome::Ack);
            }
            Err(e) => {
                self.fail(job_id, "EngineError", e.to_string()).await?;
                return Ok(Outcome::Ack);
            }
        };
        self.log_warnings(job_id, &result).await;
        if !self.set_progress(&mut job, 4, "Processing results").await? {
            return Ok(Outcome::Ack);
        }
        let bytes = serde_json::to_vec(&result).expect("results serialise");
        self.ports
            .results
            .put_if_absent(&job.cache_key, &bytes)
            .await?;
        if job.use_cache {
            let now = self.ports.clock.now();
            let entry = CacheEntry {
                cache_key: job.cache_key.clone(),
                result_key: job.cache_key.clone(),
                size_bytes: bytes.len() as u64,
                cached_at: now,
                source_job_id: job.job_id.clone(),
                age_group: job.age_group.clone(),
                country: job.country.clone(),
                expires_at: now + chrono(self.config.cache_ttl),
            };
            self.ports.store.put_cache_entry(&entry).await?;
        }
        let now = self.ports.clock.now();
        let key = job.cache_key.clone();
        let ended = finish_job(&self.ports, job_id, JobStatus::Success, |j| {
            j.completed_at = Some(now);
            j.result_key = Some(key.clone());
            j.progress = JobProgress::new(5, "Completed");
        })
        .await?;
        if let Some((job, true)) = ended {
            self.log(
                job_id,
                LogLevel::Info,
                "worker",
                "Calibration completed successfully".into(),
            )
            .await;
            after_terminal(&self.ports, &self.config, &job).await?;
        }
        Ok(Outcome::Ack)
    }

    async fn try_cache(&self, job: &Job) -> Result<Option<Outcome>, StoreError> {
        let now = self.ports.clock.now();
        let entry = self
            .ports
            .store
            .get_cache_entry(&job.cache_key, now)
            .await?;
        let cached = match &entry {
            Some(entry) => self.ports.results.get(&entry.result_key).await?,
            None => None,
        };
        let (Some(hit), Some(cached)) = (entry, cached) else {
            self.ports.store.count_cache(CacheCounter::Miss).await?;
            return Ok(None);
        };
        self.ports.store.count_cache(CacheCounter::Hit).await?;
        let ended = finish_job(&self.ports, &job.job_id, JobStatus::Success, |j| {
            j.completed_at = Some(now);
            j.result_key = Some(hit.result_key.clone());
            j.progress = JobProgress::new(5, "Completed (cached)");
            j.cache_info = Some(CacheInfo {
                cached_at: hit.cached_at,
                source_job_id: hit.source_job_id.clone(),
            });
        })
        .await?;
        if let Some((done, true)) = ended {
            self.log(
                &job.job_id,
                LogLevel::Info,
                "cache",
                "Using cached result".into(),
            )
            .await;
            // A stored result that does not parse has no warnings to repeat.
            if let Ok(result) = serde_json::from_slice::<CalibrationOutput>(&cached) {
                self.log_warnings(&job.job_id, &result).await;
            }
            after_terminal(&self.ports, &self.config, &done).await?;
        }
        Ok(Some(Outcome::Ack))
    }

    /// Logs the result's warnings (fits that should not be trusted as they are) on the job:
    /// the result keeps them too, but the log is where a user watching the job sees them.
    async fn log_warnings(&self, job_id: &str, result: &CalibrationOutput) {
        for warning in &result.warnings {
            self.log(job_id, LogLevel::Warning, "engine", warning.clone())
                .await;
        }
    }

    /// Runs the engine on the blocking pool while a heartbeat renews the lease, forwards
    /// step names to the log and raises the cancel flag when the job ends elsewhere or is
    /// overdue.
    async fn run_engine(
        &self,
        job: &Job,
        request: CalibrationRequest,
    ) -> Result<Result<CalibrationOutput, EngineError>, StoreError> {
        let cancelled = Arc::new(AtomicBool::new(false));
        let (steps_tx, mut steps_rx) = mpsc::unbounded_channel();
        let progress = EngineProgress {
            cancelled: cancelled.clone(),
            steps: steps_tx,
        };
        let engine = tokio::task::spawn_blocking(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                calibrate(&request, &progress).map(|c| calibration_output(&request, &c))
            }));
            outcome.unwrap_or_else(|panic| {
                let message = panic_message(&*panic);
                Err(EngineError::Sampler(format!("internal error: {message}")))
            })
        });
        tokio::pin!(engine);
        // Short enough that a cancel stops the engine promptly, well within the lease.
        let beat =
            (self.config.lease / 3).clamp(Duration::from_millis(50), Duration::from_millis(500));
        let mut heartbeat = tokio::time::interval(beat);
        heartbeat.tick().await;
        loop {
            tokio::select! {
                done = &mut engine => {
                    while let Ok(step) = steps_rx.try_recv() {
                        self.log(&job.job_id, LogLevel::Info, "engine", step).await;
                    }
                    return Ok(done.unwrap_or_else(|e| Err(EngineError::Sampler(format!("engine task failed: {e}")))));
                }
                Some(step) = steps_rx.recv() => {
                    self.log(&job.job_id, LogLevel::Info, "engine", step).await;
                }
                _ = heartbeat.tick() => {
                    let now = self.ports.clock.now();
                    let still_ours = match self.ports.store.get_job(&job.job_id, now).await {
                        Ok(Some(current)) => current.status == JobStatus::Running && now < current.timeout_at,
                        Ok(None) => false,
                        // A storage hiccup is not a reason to stop computing.
                        Err(_) => true,
                    };
                    if !still_ours {
                        cancelled.store(true, Ordering::Relaxed);
                    } else {
                        let mut renewed = job.clone();
                        let _ = self.set_progress(&mut renewed, 3, "Running R calibration").await;
                    }
                }
            }
        }
    }

    /// Processes one delivery and settles its message: ack when done, release for a retry,
    /// and leave it to time out on a storage error.
    pub async fn handle(&self, delivery: &Delivery) -> Result<(), StoreError> {
        match self.process(&delivery.job_id).await {
            Ok(Outcome::Ack) => self.ports.queue.ack(&delivery.receipt).await,
            Ok(Outcome::Retry(delay)) => self.ports.queue.release(&delivery.receipt, delay).await,
            Err(e) => {
                tracing::warn!(job_id = %delivery.job_id, error = %e, "job processing hit a storage error; the message will be redelivered");
                Err(e)
            }
        }
    }

    /// Receives and processes messages until `shutdown` turns true. In-flight work finishes;
    /// unreceived messages stay queued.
    pub async fn run(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let visibility = self.config.lease + Duration::from_secs(5);
        loop {
            if *shutdown.borrow() {
                return;
            }
            let deliveries = match self.ports.queue.receive(1, visibility).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "queue receive failed");
                    Vec::new()
                }
            };
            if deliveries.is_empty() {
                tokio::select! {
                    _ = self.ports.queue.wait(IDLE_POLL) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            for delivery in deliveries {
                let _ = self.handle(&delivery).await;
            }
        }
    }
}
