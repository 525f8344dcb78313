//! The janitor Lambda, run on a schedule: the core's `Janitor::tick` (overdue jobs →
//! timeout, expired leases → queued again, batch slot repair), then the dead-letter
//! queues: a message there failed `maxReceiveCount` deliveries (its worker kept crashing,
//! timing out or failing), so its job is marked failed with the reason, and the message is
//! deleted once that is recorded.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use vacal_aws::{DeadLetter, SqsDeadLetters};
use vacal_core::ports::{StoreError, StoreResult};
use vacal_core::worker::fail_job;
use vacal_core::{Config, Janitor, Ports};

/// Dead letters handled per run at most, so one run ends well within its timeout; the
/// rest wait for the next run.
const MAX_DEAD_LETTERS_PER_RUN: usize = 500;
/// How long a dead letter being handled stays hidden from a concurrent run.
const DEAD_LETTER_VISIBILITY: Duration = Duration::from_secs(120);

/// Where dead letters come from (the SQS dead-letter queues; a fake in tests).
#[async_trait]
pub trait DeadLetterSource: Send + Sync {
    /// Up to `max` dead letters, hidden from other readers until deleted or timed out.
    async fn receive(&self, max: u32) -> StoreResult<Vec<DeadLetter>>;
    async fn delete(&self, receipt: &str) -> StoreResult<()>;
}

#[async_trait]
impl DeadLetterSource for SqsDeadLetters {
    async fn receive(&self, max: u32) -> StoreResult<Vec<DeadLetter>> {
        SqsDeadLetters::receive(self, max, DEAD_LETTER_VISIBILITY).await
    }
    async fn delete(&self, receipt: &str) -> StoreResult<()> {
        SqsDeadLetters::delete(self, receipt).await
    }
}

/// What one run did (the invocation's response, also logged).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub timed_out: Vec<String>,
    pub requeued: Vec<String>,
    pub batches_repaired: usize,
    /// Jobs marked failed because their message was dead-lettered.
    pub dead_lettered: Vec<String>,
    /// Dead letters whose job had already ended or was gone (deleted, nothing to do).
    pub dead_letters_settled: usize,
    /// Dead letters that named no job (deleted).
    pub dead_letters_malformed: usize,
}

pub struct Handler {
    janitor: Janitor,
    ports: Ports,
    config: Config,
    dead_letters: Arc<dyn DeadLetterSource>,
}

impl Handler {
    pub fn new(
        ports: Ports,
        config: Config,
        dead_letters: Arc<dyn DeadLetterSource>,
    ) -> Arc<Handler> {
        Arc::new(Handler {
            janitor: Janitor::new(ports.clone(), config.clone()),
            ports,
            config,
            dead_letters,
        })
    }

    /// The handler on DynamoDB, SQS and S3, configured from the environment.
    pub async fn from_env() -> Result<Arc<Handler>, String> {
        let d = vacal_aws::Deployment::from_env().await?;
        let dead = SqsDeadLetters::new(d.clients.sqs.clone(), d.env.dead_letter_queues.clone());
        Ok(Handler::new(d.ports, d.config, Arc::new(dead)))
    }

    /// One pass. A storage error stops it (the next scheduled run retries); a dead letter
    /// is deleted only after its job's failure is recorded.
    pub async fn run(&self) -> Result<Report, StoreError> {
        let tick = self.janitor.tick().await?;
        let mut report = Report {
            timed_out: tick.timed_out,
            requeued: tick.requeued,
            batches_repaired: tick.batches_repaired,
            ..Report::default()
        };
        let mut handled = 0;
        while handled < MAX_DEAD_LETTERS_PER_RUN {
            let letters = self.dead_letters.receive(10).await?;
            if letters.is_empty() {
                break;
            }
            handled += letters.len();
            for letter in letters {
                match &letter.job_id {
                    None => {
                        tracing::warn!(body = %letter.body, "dead letter names no job; deleting it");
                        report.dead_letters_malformed += 1;
                    }
                    Some(job_id) => {
                        if self.fail_dead_lettered(job_id, &letter).await? {
                            report.dead_lettered.push(job_id.clone());
                        } else {
                            report.dead_letters_settled += 1;
                        }
                    }
                }
                self.dead_letters.delete(&letter.receipt).await?;
            }
        }
        tracing::info!(?report, "janitor run");
        Ok(report)
    }

    /// Marks the job failed unless it already ended; true if this run ended it.
    async fn fail_dead_lettered(
        &self,
        job_id: &str,
        letter: &DeadLetter,
    ) -> Result<bool, StoreError> {
        let message = format!(
            "The job's queue message failed {} deliveries (the worker crashed, timed out or \
             hit errors each time) and was moved to the dead-letter queue",
            letter.receive_count
        );
        fail_job(
            &self.ports,
            &self.config,
            job_id,
            "janitor",
            "DeliveryFailed",
            message,
        )
        .await
    }
}
