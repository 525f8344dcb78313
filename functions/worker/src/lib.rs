//! The worker Lambda: one SQS batch in, one `SqsBatchResponse` out. Each record runs the
//! core's `Worker::process` in its own task, so a panic or error fails that record only.
//!
//! - Done (the job ran, ended elsewhere, or is gone): success; Lambda deletes the message.
//! - A malformed body names no job and never will: success (dropped, with a log line).
//! - Retry later (a lease held elsewhere, no batch slot yet): a fresh message with the
//!   delay is sent and this one succeeds, so waiting never counts towards the dead-letter
//!   limit.
//! - A storage error or a panic: a batch item failure; SQS redelivers it after the
//!   visibility timeout, and after `maxReceiveCount` moves it to the dead-letter queue,
//!   where the janitor marks the job failed.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use tokio::sync::Semaphore;
use tracing::Instrument;
use vacal_aws::JobMessage;
use vacal_core::worker::Outcome;
use vacal_core::{Config, Ports, Worker};

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordResult {
    /// Settled: the message may be deleted.
    Done,
    /// A body that names no job.
    Malformed,
    /// Requeued as a new message after this delay.
    Requeued(Duration),
    /// Leave the message for redelivery (the reason is logged).
    Failed(String),
}

/// The handler's state, built once per Lambda init.
pub struct Handler {
    worker: Worker,
    ports: Ports,
    /// Records of one batch processed at once; the engine is CPU-bound, so about the
    /// number of vCPUs the function's memory buys.
    concurrency: usize,
}

impl Handler {
    pub fn new(ports: Ports, config: Config, concurrency: usize) -> Arc<Handler> {
        Arc::new(Handler {
            worker: Worker::new(ports.clone(), config),
            ports,
            concurrency: concurrency.max(1),
        })
    }

    /// The handler on DynamoDB, SQS and S3, configured from the environment.
    pub async fn from_env() -> Result<Arc<Handler>, String> {
        let deployment = vacal_aws::Deployment::from_env().await?;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Handler::new(deployment.ports, deployment.config, cpus))
    }

    /// Processes one record.
    pub async fn record(&self, message: &SqsMessage) -> RecordResult {
        let body = message.body.as_deref().unwrap_or_default();
        let Some(job) = JobMessage::parse(body) else {
            tracing::warn!(body, "dropping a message that names no job");
            return RecordResult::Malformed;
        };
        match self.worker.process(&job.job_id).await {
            Ok(Outcome::Ack) => RecordResult::Done,
            Ok(Outcome::Retry(delay)) => {
                let priority = match job.priority {
                    Some(p) => p,
                    None => match self
                        .ports
                        .store
                        .get_job(&job.job_id, self.ports.clock.now())
                        .await
                    {
                        Ok(Some(j)) => j.priority,
                        Ok(None) => return RecordResult::Done,
                        Err(e) => return RecordResult::Failed(e.to_string()),
                    },
                };
                match self.ports.queue.send(&job.job_id, priority, delay).await {
                    Ok(()) => RecordResult::Requeued(delay),
                    Err(e) => RecordResult::Failed(format!("could not requeue: {e}")),
                }
            }
            Err(e) => RecordResult::Failed(e.to_string()),
        }
    }

    /// Processes a batch: records run concurrently (bounded), each isolated in its own
    /// task; the response lists the records to redeliver.
    pub async fn batch(self: &Arc<Self>, event: SqsEvent) -> SqsBatchResponse {
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let mut tasks = Vec::with_capacity(event.records.len());
        for message in event.records {
            let id = message.message_id.clone().unwrap_or_default();
            let this = self.clone();
            let permits = permits.clone();
            let span = tracing::info_span!("record", message_id = %id);
            let task = tokio::spawn(
                async move {
                    let _permit = permits.acquire_owned().await;
                    this.record(&message).await
                }
                .instrument(span),
            );
            tasks.push((id, task));
        }
        let mut response = SqsBatchResponse::default();
        for (id, task) in tasks {
            let outcome = task
                .await
                .unwrap_or_else(|e| RecordResult::Failed(format!("record task failed: {e}")));
            tracing::info!(message_id = %id, ?outcome, "record settled");
            if let RecordResult::Failed(reason) = outcome {
                tracing::warn!(message_id = %id, %reason, "record will be redelivered");
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                response.batch_item_failures.push(failure);
            }
        }
        response
    }
}
