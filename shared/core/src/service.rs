//! `JobService`: every endpoint of api-reference §5–§10 as a use case over the ports.
//! Handlers parse HTTP and call these; all rules live here.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use vacal_contract as wire;

use crate::config::Config;
use crate::domain::{
    timestamp, Batch, BatchStatus, Job, JobProgress, JobStatus, JobType, LogEntry, LogLevel,
    TOTAL_STEPS,
};
use crate::ports::{
    append_log_or_warn, Clock, IdGenerator, InsertQueuedError, JobFilter, JobQueue, JobStore,
    ResultStore, StoreError, Write,
};
use crate::validation::{validate_job_request, ValidJobRequest, ValidationError};

/// Why a use case refused or failed; each maps to one HTTP status.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ServiceError {
    /// 400: unparseable body, missing confirmation, result of an unfinished job.
    #[error("{0}")]
    BadRequest(String),
    /// 404
    #[error("{0}")]
    NotFound(String),
    /// 409: the job's state does not allow it.
    #[error("{0}")]
    Conflict(String),
    /// 422
    #[error("{}", .0.detail())]
    Invalid(ValidationError),
    /// 500: storage or queue failure; never caused by input.
    #[error("{0}")]
    Internal(String),
}

impl From<ValidationError> for ServiceError {
    fn from(e: ValidationError) -> Self {
        ServiceError::Invalid(e)
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        ServiceError::Internal(e.to_string())
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;

/// Everything a use case needs from the deployment.
#[derive(Clone)]
pub struct Ports {
    pub store: Arc<dyn JobStore>,
    pub queue: Arc<dyn JobQueue>,
    pub results: Arc<dyn ResultStore>,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdGenerator>,
}

fn std_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// `JobMetadata` (§5.3), with the additive `batch_id`.
pub fn metadata(job: &Job) -> wire::JobMetadata {
    wire::JobMetadata {
        job_id: job.job_id.clone(),
        job_type: job.job_type,
        created_at: timestamp(job.created_at),
        started_at: job.started_at.map(timestamp),
        completed_at: job.completed_at.map(timestamp),
        timeout_at: timestamp(job.timeout_at),
        priority: job.priority,
        retry_count: job.retry_count,
        max_retries: job.max_retries,
        batch_id: job.batch_id.clone(),
    }
}

fn progress(p: &JobProgress) -> wire::JobProgress {
    wire::JobProgress {
        current_step: p.current_step,
        total_steps: TOTAL_STEPS,
        step_name: p.step_name.clone(),
        progress_percentage: f64::from(p.current_step) / f64::from(TOTAL_STEPS) * 100.0,
        estimated_completion: None,
    }
}

fn log_entry(entry: &LogEntry) -> wire::JobLogEntry {
    wire::JobLogEntry {
        timestamp: timestamp(entry.timestamp),
        level: entry.level,
        message: entry.message.clone(),
        component: entry.component.clone(),
        data: entry.data.clone(),
    }
}

pub struct JobService {
    ports: Ports,
    config: Config,
}

impl JobService {
    pub fn new(ports: Ports, config: Config) -> Self {
        JobService { ports, config }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    fn now(&self) -> DateTime<Utc> {
        self.ports.clock.now()
    }

    async fn log(&self, job_id: &str, level: LogLevel, component: &str, message: String) {
        let entry = LogEntry::new(self.now(), level, component, message);
        append_log_or_warn(
            self.ports.store.as_ref(),
            job_id,
            &entry,
            self.config.max_log_entries,
        )
        .await;
    }

    fn new_job(&self, valid: &ValidJobRequest, job_type: JobType, batch_id: Option<&str>) -> Job {
        let now = self.now();
        Job {
            job_id: format!("job_{}", self.ports.ids.hex12()),
            job_type,
            status: JobStatus::Pending,
            created_at: now,
            started_at: None,
            completed_at: None,
            timeout_at: now + chrono::Duration::minutes(i64::from(valid.timeout_minutes)),
            priority: valid.priority,
            retry_count: 0,
            max_retries: 3,
            batch_id: batch_id.map(str::to_string),
            request: valid.request_json.clone(),
            age_group: valid.age_group.clone(),
            country: valid.country.clone(),
            use_cache: valid.use_cache,
            cache_key: valid.cache_key.clone(),
            progress: JobProgress::new(
                0,
                if batch_id.is_some() {
                    "Queued (batch)"
                } else {
                    "Queued"
                },
            ),
            error: None,
            result_key: None,
            completed_result_at: None,
            cache_info: None,
            lease_until: None,
            attempts: 0,
            queued: false,
            expires_at: now + std_duration(self.config.job_retention),
            version: 1,
        }
    }

    /// Stores a new job, logs its creation and (unless `hold`) queues it, in one store call
    /// (one commit where the store and queue share a database). A queue failure fails the
    /// job, so nothing is left pending forever.
    async fn submit(
        &self,
        mut job: Job,
        valid: &ValidJobRequest,
        hold: bool,
    ) -> ServiceResult<Job> {
        job.queued = !hold;
        let now = self.now();
        let mut logs = Vec::with_capacity(2);
        logs.push(match &job.batch_id {
            Some(batch) => LogEntry::new(
                now,
                LogLevel::Info,
                "batch_api",
                format!("Job created as part of batch {batch}"),
            ),
            None => LogEntry::new(
                now,
                LogLevel::Info,
                "api",
                format!("Job created with priority {}", job.priority),
            ),
        });
        if !valid.ignored_fields.is_empty() {
            logs.push(LogEntry::new(
                now,
                LogLevel::Warning,
                "api",
                format!(
                    "Ignored unknown request fields: {}",
                    valid.ignored_fields.join(", ")
                ),
            ));
        }
        let stored = self
            .ports
            .store
            .insert_job_queued(
                &job,
                &logs,
                self.config.max_log_entries,
                self.ports.queue.as_ref(),
            )
            .await;
        match stored {
            Ok(()) => Ok(job),
            Err(InsertQueuedError::NotStored(e)) => Err(e.into()),
            Err(InsertQueuedError::NotQueued(e)) => {
                let mut failed = job.clone();
                failed.status = JobStatus::Failed;
                failed.completed_at = Some(self.now());
                failed.error = Some(crate::domain::ErrorDetails {
                    error_type: "DispatchError".into(),
                    error_message: format!("could not queue the job: {e}"),
                    traceback: None,
                });
                failed.version += 1;
                let _ = self.ports.store.update_job(&failed).await;
                Err(ServiceError::Internal(format!("Failed to create job: {e}")))
            }
        }
    }

    /// POST /api/v1/calibrate/async
    pub async fn create_job(&self, body: &Value) -> ServiceResult<wire::JobCreatedResponse> {
        if !body.is_object() {
            return Err(ServiceError::BadRequest(
                "Request body must be a JSON object".into(),
            ));
        }
        let valid = validate_job_request(body, &self.config, "")?;
        let job = self.new_job(&valid, JobType::Calibration, None);
        let job = self.submit(job, &valid, false).await?;
        Ok(wire::JobCreatedResponse {
            job_id: job.job_id,
            status: "created".into(),
        })
    }

    async fn existing_job(&self, job_id: &str) -> ServiceResult<Job> {
        self.ports
            .store
            .get_job(job_id, self.now())
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("Job {job_id} not found")))
    }

    async fn existing_batch(&self, batch_id: &str, now: DateTime<Utc>) -> ServiceResult<Batch> {
        self.ports
            .store
            .get_batch(batch_id, now)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("Batch {batch_id} not found")))
    }

    /// GET /api/v1/calibrate/{job_id}/status
    pub async fn job_status(
        &self,
        job_id: &str,
        params: &wire::StatusParams,
    ) -> ServiceResult<wire::JobStatusResponse> {
        let job = self.existing_job(job_id).await?;
        let logs = self
            .ports
            .store
            .logs(
                job_id,
                params.log_level,
                params.log_offset(),
                params.log_limit(),
            )
            .await?;
        let result_summary = if job.status == JobStatus::Success {
            let algorithms = self
                .result_of(&job)
                .await
                .ok()
                .map(|r| r.calibrated.len() as u32);
            Some(wire::ResultSummary {
                algorithms_processed: algorithms,
                age_group: job.age_group.clone(),
                country: job.country.clone(),
                completion_time: job.completed_at.map(timestamp),
            })
        } else {
            None
        };
        let error_details = match (&job.error, job.status) {
            (Some(e), JobStatus::Failed | JobStatus::Timeout) => Some(e.clone()),
            _ => None,
        };
        Ok(wire::JobStatusResponse {
            progress: Some(progress(&job.progress)),
            metadata: metadata(&job),
            logs: logs.iter().map(log_entry).collect(),
            job_id: job.job_id,
            status: job.status,
            result_summary,
            error_details,
        })
    }

    async fn result_of(&self, job: &Job) -> ServiceResult<wire::CalibrationOutput> {
        let key = job.result_key.as_deref().ok_or_else(|| {
            ServiceError::Internal(format!("Job {} has no stored result", job.job_id))
        })?;
        let bytes = self.ports.results.get(key).await?.ok_or_else(|| {
            ServiceError::Internal(format!("The result of job {} is missing", job.job_id))
        })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ServiceError::Internal(format!("stored result is unreadable: {e}")))
    }

    /// GET /api/v1/calibrate/{job_id}/result
    pub async fn job_result(&self, job_id: &str) -> ServiceResult<wire::JobResultResponse> {
        let job = self.existing_job(job_id).await?;
        let result = match job.status {
            JobStatus::Success => {
                let output = self.result_of(&job).await?;
                wire::CalibrationResult::Success(Box::new(wire::CalibrationSuccess {
                    output,
                    age_group: job.age_group.clone(),
                    country: job.country.clone(),
                    completed_at: job.completed_at.map(timestamp),
                    cache_info: job.cache_info.as_ref().map(|c| wire::CacheInfo {
                        cached_at: timestamp(c.cached_at),
                        source_job_id: c.source_job_id.clone(),
                    }),
                }))
            }
            JobStatus::Failed | JobStatus::Timeout => {
                let message = job
                    .error
                    .as_ref()
                    .map(|e| e.error_message.clone())
                    .unwrap_or_else(|| job.status.as_str().to_string());
                wire::CalibrationResult::Failure(wire::CalibrationFailure {
                    status: job.status.as_str().to_string(),
                    error: message,
                })
            }
            other => {
                return Err(ServiceError::BadRequest(format!(
                    "Job {job_id} is not completed (status: {})",
                    other.as_str()
                )))
            }
        };
        let cache_info = match &result {
            wire::CalibrationResult::Success(r) => r.cache_info.clone(),
            wire::CalibrationResult::Failure(_) => None,
        };
        Ok(wire::JobResultResponse {
            job_id: job.job_id.clone(),
            status: job.status,
            result,
            metadata: metadata(&job),
            cache_info,
        })
    }

    /// The result of a successful job, for the result files: 404 and 400 as `/result` gives
    /// them, and 409 for a failed or timed-out job (it has no numbers to export).
    pub async fn successful_result(&self, job_id: &str) -> ServiceResult<wire::CalibrationSuccess> {
        match self.job_result(job_id).await?.result {
            wire::CalibrationResult::Success(success) => Ok(*success),
            wire::CalibrationResult::Failure(failure) => Err(ServiceError::Conflict(format!(
                "Job {job_id} has no result to export (status: {}): {}",
                failure.status, failure.error
            ))),
        }
    }

    /// The outputs of a batch's successful members, in the batch's order, for its result
    /// file; members still running or without a result are left out.
    pub async fn batch_results(
        &self,
        batch_id: &str,
    ) -> ServiceResult<Vec<(String, wire::CalibrationOutput)>> {
        let now = self.now();
        let batch = self.existing_batch(batch_id, now).await?;
        let mut outputs = Vec::new();
        for id in &batch.job_ids {
            let Some(job) = self.ports.store.get_job(id, now).await? else {
                continue;
            };
            if job.status == JobStatus::Success {
                outputs.push((job.job_id.clone(), self.result_of(&job).await?));
            }
        }
        Ok(outputs)
    }

    /// Moves a job to a terminal state unless it already is in one; retries lost writes.
    /// Returns the job as it ended up, and whether this call made the change.
    pub(crate) async fn finish(
        &self,
        job_id: &str,
        status: JobStatus,
        edit: impl Fn(&mut Job),
    ) -> ServiceResult<Option<(Job, bool)>> {
        finish_job(&self.ports, job_id, status, edit)
            .await
            .map_err(Into::into)
    }

    /// DELETE /api/v1/calibrate/{job_id}
    pub async fn cancel_job(&self, job_id: &str) -> ServiceResult<wire::CancelResponse> {
        let now = self.now();
        let Some((job, changed)) = self
            .finish(job_id, JobStatus::Cancelled, |j| j.completed_at = Some(now))
            .await?
        else {
            return Err(ServiceError::NotFound(format!("Job {job_id} not found")));
        };
        if !changed {
            return Err(ServiceError::Conflict(format!(
                "Job {job_id} is already {} and cannot be cancelled",
                job.status.as_str()
            )));
        }
        self.log(
            job_id,
            LogLevel::Warning,
            "api",
            "Job cancelled by user".into(),
        )
        .await;
        crate::worker::after_terminal(&self.ports, &self.config, &job).await?;
        Ok(wire::CancelResponse {
            job_id: job_id.to_string(),
            status: "cancelled".into(),
        })
    }

    /// DELETE /api/v1/jobs/{job_id}: cancels an unfinished job, then removes it.
    pub async fn delete_job(&self, job_id: &str) -> ServiceResult<wire::DeleteJobResponse> {
        let job = self.existing_job(job_id).await?;
        if !job.status.is_terminal() {
            let now = self.now();
            if let Some((ended, true)) = self
                .finish(job_id, JobStatus::Cancelled, |j| j.completed_at = Some(now))
                .await?
            {
                crate::worker::after_terminal(&self.ports, &self.config, &ended).await?;
            }
        }
        let deleted = self.ports.store.delete_job(job_id).await?;
        Ok(wire::DeleteJobResponse {
            job_id: job_id.to_string(),
            status: "deleted".into(),
            deleted_keys: deleted,
        })
    }

    /// DELETE /api/v1/jobs/clear/all
    pub async fn delete_all(
        &self,
        params: &wire::BulkDeleteParams,
    ) -> ServiceResult<wire::BulkDeleteResponse> {
        if params.confirm != Some(true) {
            return Err(ServiceError::BadRequest(
                "Bulk deletion requires explicit confirmation (set confirm=true)".into(),
            ));
        }
        let filter = JobFilter {
            status: params.status,
            age_group: params.age_group.map(|a| a.as_str().to_string()),
            ..JobFilter::default()
        };
        let (jobs, _) = self
            .ports
            .store
            .list_jobs(&filter, 0, u64::MAX, self.now())
            .await?;
        let mut deleted = Vec::new();
        let mut failed = Vec::new();
        for job in jobs {
            match self.delete_job(&job.job_id).await {
                Ok(_) => deleted.push(job.job_id),
                Err(e) => failed.push(wire::FailedDeletion {
                    job_id: job.job_id,
                    error: e.to_string(),
                }),
            }
        }
        Ok(wire::BulkDeleteResponse {
            deleted_count: deleted.len() as u64,
            failed_count: failed.len() as u64,
            deleted_jobs: deleted,
            failed_jobs: (!failed.is_empty()).then_some(failed),
        })
    }

    /// POST /api/v1/jobs/retry/{job_id}: a new job from the stored request of a failed or
    /// timed-out one.
    pub async fn retry_job(
        &self,
        job_id: &str,
        params: &wire::RetryParams,
    ) -> ServiceResult<wire::RetryResponse> {
        let old = self.existing_job(job_id).await?;
        if !matches!(old.status, JobStatus::Failed | JobStatus::Timeout) {
            return Err(ServiceError::Conflict(format!(
                "Job {job_id} is {} and cannot be retried (only failed or timed-out jobs can)",
                old.status.as_str()
            )));
        }
        let mut body = old.request.clone();
        body["priority"] = json!(params.new_priority.unwrap_or(old.priority));
        let old_minutes = (old.timeout_at - old.created_at).num_minutes();
        body["timeout_minutes"] = json!(params.new_timeout.map(i64::from).unwrap_or(old_minutes));
        body["use_cache"] = json!(old.use_cache);
        let valid = validate_job_request(&body, &self.config, "")?;
        let mut job = self.new_job(&valid, JobType::Calibration, None);
        job.retry_count = old.retry_count + 1;
        let job = self.submit(job, &valid, false).await?;
        self.log(
            &job.job_id,
            LogLevel::Info,
            "api",
            format!("Retry of job {job_id}"),
        )
        .await;
        Ok(wire::RetryResponse {
            job_id: job.job_id,
            status: "created".into(),
            original_job_id: job_id.to_string(),
        })
    }

    /// POST /api/v1/calibrate/batch
    pub async fn create_batch(&self, body: &Value) -> ServiceResult<wire::BatchCreatedResponse> {
        let Some(obj) = body.as_object() else {
            return Err(ServiceError::BadRequest(
                "Request body must be a JSON object".into(),
            ));
        };
        let jobs = match obj.get("jobs") {
            Some(Value::Array(jobs)) => jobs,
            Some(_) => return Err(ValidationError::single("jobs", "must be an array").into()),
            None => return Err(ValidationError::single("jobs", "is required").into()),
        };
        if jobs.is_empty() || jobs.len() > self.config.batch_max_size {
            return Err(ValidationError::single(
                "jobs",
                format!(
                    "must hold 1 to {} jobs, got {}",
                    self.config.batch_max_size,
                    jobs.len()
                ),
            )
            .into());
        }
        let batch_name = match obj.get("batch_name") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.chars().count() <= 200 => Some(s.clone()),
            Some(_) => {
                return Err(ValidationError::single(
                    "batch_name",
                    "must be a string of at most 200 characters",
                )
                .into())
            }
        };
        let parallel_limit = match obj.get("parallel_limit") {
            None | Some(Value::Null) => self.config.default_parallel_limit,
            Some(v) => match v.as_u64() {
                Some(n) if (1..=u64::from(self.config.max_parallel_limit)).contains(&n) => n as u32,
                _ => {
                    return Err(ValidationError::single(
                        "parallel_limit",
                        format!(
                            "must be an integer from 1 to {}",
                            self.config.max_parallel_limit
                        ),
                    )
                    .into())
                }
            },
        };
        let fail_fast = match obj.get("fail_fast") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(ValidationError::single("fail_fast", "must be a boolean").into()),
        };
        // All or nothing: every member is validated before anything is stored.
        let mut errors = Vec::new();
        let mut valid = Vec::with_capacity(jobs.len());
        for (i, job) in jobs.iter().enumerate() {
            match validate_job_request(job, &self.config, &format!("jobs[{i}]")) {
                Ok(v) => valid.push(v),
                Err(e) => errors.extend(e.errors),
            }
        }
        if !errors.is_empty() {
            return Err(ValidationError { errors }.into());
        }
        let now = self.now();
        let batch_id = format!("batch_{}", self.ports.ids.hex12());
        let members: Vec<Job> = valid
            .iter()
            .map(|v| self.new_job(v, JobType::BatchCalibration, Some(&batch_id)))
            .collect();
        let batch = Batch {
            batch_id: batch_id.clone(),
            batch_name: batch_name.clone(),
            job_ids: members.iter().map(|j| j.job_id.clone()).collect(),
            created_at: now,
            parallel_limit,
            fail_fast,
            running: Vec::new(),
            expires_at: now + std_duration(self.config.job_retention),
            version: 1,
        };
        self.ports.store.insert_batch(&batch).await?;
        // Only the first `parallel_limit` members (by priority, then order) are queued now;
        // the rest are queued as slots free up.
        let admitted = crate::worker::admission_order(&members)
            .into_iter()
            .take(parallel_limit as usize)
            .collect::<Vec<_>>();
        for (i, (job, v)) in members.into_iter().zip(&valid).enumerate() {
            self.submit(job, v, !admitted.contains(&i)).await?;
        }
        Ok(wire::BatchCreatedResponse {
            batch_id: batch_id.clone(),
            batch_metadata: wire::BatchMetadata {
                batch_id,
                batch_name,
                total_jobs: batch.job_ids.len() as u32,
                created_at: timestamp(now),
                parallel_limit,
                fail_fast,
            },
            job_ids: batch.job_ids,
        })
    }

    /// GET /api/v1/calibrate/batch/{batch_id}/status
    pub async fn batch_status(&self, batch_id: &str) -> ServiceResult<wire::BatchStatusResponse> {
        let now = self.now();
        let batch = self.existing_batch(batch_id, now).await?;
        let mut statuses = Vec::with_capacity(batch.job_ids.len());
        let mut items = Vec::with_capacity(batch.job_ids.len());
        for id in &batch.job_ids {
            // A member deleted by the user counts as cancelled.
            let status = self
                .ports
                .store
                .get_job(id, now)
                .await?
                .map_or(JobStatus::Cancelled, |j| j.status);
            statuses.push(status);
            items.push(wire::BatchMemberStatus {
                job_id: id.clone(),
                status,
            });
        }
        let count =
            |f: &dyn Fn(JobStatus) -> bool| statuses.iter().filter(|s| f(**s)).count() as u32;
        Ok(wire::BatchStatusResponse {
            batch_id: batch_id.to_string(),
            batch_name: batch.batch_name,
            total_jobs: statuses.len() as u32,
            completed_jobs: count(&|s| s == JobStatus::Success),
            failed_jobs: count(&|s| matches!(s, JobStatus::Failed | JobStatus::Timeout)),
            running_jobs: count(&|s| s == JobStatus::Running),
            pending_jobs: count(&|s| s == JobStatus::Pending),
            cancelled_jobs: count(&|s| s == JobStatus::Cancelled),
            batch_status: BatchStatus::of(batch.fail_fast, &statuses),
            job_statuses: items,
        })
    }

    /// GET /api/v1/jobs
    pub async fn list_jobs(
        &self,
        params: &wire::ListParams,
    ) -> ServiceResult<wire::JobListResponse> {
        let (page, page_size) = (params.page(), params.page_size());
        let filter = JobFilter {
            status: params.status,
            job_type: params.job_type.clone(),
            age_group: params.age_group.map(|a| a.as_str().to_string()),
            country: params.country.clone(),
            created_after: params.created_after,
            created_before: params.created_before,
            batch_id: None,
        };
        let (jobs, total) = self
            .ports
            .store
            .list_jobs(&filter, (page - 1) * page_size, page_size, self.now())
            .await?;
        let items = jobs
            .into_iter()
            .map(|j| wire::JobListItem {
                metadata: metadata(&j),
                status: j.status,
                age_group: j.age_group,
                country: j.country,
            })
            .collect();
        Ok(wire::JobListResponse {
            jobs: items,
            total_count: total,
            page,
            page_size,
            has_next: page * page_size < total,
        })
    }

    /// GET /api/v1/cache/stats
    pub async fn cache_stats(&self) -> ServiceResult<wire::CacheStatsResponse> {
        let entries = self.ports.store.cache_entries(self.now()).await?;
        let counters = self.ports.store.cache_counters().await?;
        let lookups = counters.hits + counters.misses;
        let bytes: u64 = entries.iter().map(|e| e.size_bytes).sum();
        Ok(wire::CacheStatsResponse {
            total_cached_results: entries.len() as u64,
            cache_hit_rate: if lookups == 0 {
                0.0
            } else {
                round2(counters.hits as f64 / lookups as f64 * 100.0)
            },
            total_cache_size_mb: round2(bytes as f64 / 1_048_576.0),
            oldest_cached_result: entries.iter().map(|e| e.cached_at).min().map(timestamp),
            newest_cached_result: entries.iter().map(|e| e.cached_at).max().map(timestamp),
        })
    }

    /// DELETE /api/v1/cache/clear
    pub async fn clear_cache(
        &self,
        params: &wire::CacheClearParams,
    ) -> ServiceResult<wire::CacheClearResponse> {
        if params.confirm != Some(true) {
            return Err(ServiceError::BadRequest(
                "Cache clearing requires explicit confirmation (set confirm=true)".into(),
            ));
        }
        let entries = self.ports.store.cache_entries(self.now()).await?;
        let mut cleared = 0;
        for entry in entries {
            let age_ok = params
                .age_group
                .is_none_or(|a| entry.age_group.as_deref() == Some(a.as_str()));
            let country_ok = params.country.as_ref().is_none_or(|c| {
                entry
                    .country
                    .as_ref()
                    .is_some_and(|e| e.eq_ignore_ascii_case(c))
            });
            if age_ok && country_ok {
                self.ports
                    .store
                    .delete_cache_entry(&entry.cache_key)
                    .await?;
                cleared += 1;
            }
        }
        Ok(wire::CacheClearResponse {
            cleared_results: cleared,
            message: format!("Cleared {cleared} cached results"),
        })
    }

    /// GET /api/v1/jobs/health: the body, or why storage could not be reached at all.
    pub async fn health(&self) -> Result<wire::HealthResponse, StoreError> {
        let now = self.now();
        self.ports.store.ping().await?;
        let queue = self.ports.queue.depth().await;
        let pending = self
            .ports
            .store
            .jobs_by_status(&[JobStatus::Pending], None, now)
            .await
            .map_or(0, |j| j.len() as u64);
        let running = self
            .ports
            .store
            .jobs_by_status(&[JobStatus::Running], None, now)
            .await
            .map_or(0, |j| j.len() as u64);
        let cached = self
            .ports
            .store
            .cache_entries(now)
            .await
            .map_or(0, |e| e.len() as u64);
        let execution = if queue.is_ok() {
            "healthy"
        } else {
            "unhealthy"
        };
        Ok(wire::HealthResponse {
            status: if queue.is_ok() { "healthy" } else { "degraded" }.into(),
            redis: "healthy".into(),
            celery: execution.into(),
            storage: "healthy".into(),
            worker: execution.into(),
            queue_stats: wire::QueueStats {
                pending_jobs: pending,
                running_jobs: running,
                cached_results: cached,
                queue_depth: queue.ok(),
            },
            timestamp: timestamp(now),
        })
    }

    /// GET /api/v1/jobs/metrics
    pub async fn metrics(
        &self,
        params: &wire::MetricsParams,
    ) -> ServiceResult<wire::MetricsResponse> {
        let range = params.time_range.unwrap_or_default();
        let window = range.duration();
        let now = self.now();
        let jobs = self
            .ports
            .store
            .jobs_by_status(&JobStatus::ALL, Some(now - window), now)
            .await?;
        let finished: Vec<&Job> = jobs
            .iter()
            .filter(|j| {
                matches!(
                    j.status,
                    JobStatus::Success | JobStatus::Failed | JobStatus::Timeout
                )
            })
            .collect();
        let successes = finished
            .iter()
            .filter(|j| j.status == JobStatus::Success)
            .count();
        let rate = |n: usize| {
            if finished.is_empty() {
                0.0
            } else {
                round2(n as f64 / finished.len() as f64 * 100.0)
            }
        };
        let durations: Vec<f64> = finished
            .iter()
            .filter_map(|j| {
                Some((j.completed_at? - j.started_at?).num_milliseconds() as f64 / 1000.0)
            })
            .collect();
        let cached: Vec<&Job> = jobs
            .iter()
            .filter(|j| j.use_cache && j.started_at.is_some())
            .collect();
        let hits = cached.iter().filter(|j| j.cache_info.is_some()).count();
        Ok(wire::MetricsResponse {
            time_range: range,
            total_jobs: jobs.len() as u64,
            success_rate: rate(successes),
            error_rate: if finished.is_empty() {
                0.0
            } else {
                round2(100.0 - rate(successes))
            },
            average_duration_seconds: if durations.is_empty() {
                0.0
            } else {
                round2(durations.iter().sum::<f64>() / durations.len() as f64)
            },
            cache_hit_rate: if cached.is_empty() {
                0.0
            } else {
                round2(hits as f64 / cached.len() as f64 * 100.0)
            },
            status_counts: wire::StatusCounts::of(jobs.iter().map(|j| j.status)),
        })
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Moves a job to terminal `status` unless it already is terminal, retrying lost writes.
/// `None` if the job does not exist; otherwise the job as it ended and whether this call
/// changed it.
pub async fn finish_job(
    ports: &Ports,
    job_id: &str,
    status: JobStatus,
    edit: impl Fn(&mut Job),
) -> Result<Option<(Job, bool)>, StoreError> {
    loop {
        let now = ports.clock.now();
        let Some(mut job) = ports.store.get_job(job_id, now).await? else {
            return Ok(None);
        };
        if !job.status.can_become(status) {
            return Ok(Some((job, false)));
        }
        job.status = status;
        job.lease_until = None;
        edit(&mut job);
        job.version += 1;
        if ports.store.update_job(&job).await? == Write::Done {
            return Ok(Some((job, true)));
        }
    }
}
