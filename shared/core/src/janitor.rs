//! `Janitor`: what no request triggers. Overdue jobs become `timeout` even if their worker
//! died, running jobs whose lease expired are queued again, and batches whose follow-up was
//! lost get their waiting members queued.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::config::Config;
use crate::domain::JobStatus;
use crate::ports::StoreError;
use crate::service::Ports;
use crate::worker::{admit_waiting, Worker};

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    pub timed_out: Vec<String>,
    pub requeued: Vec<String>,
    pub batches_repaired: usize,
}

pub struct Janitor {
    ports: Ports,
    worker: Worker,
}

impl Janitor {
    pub fn new(ports: Ports, config: Config) -> Self {
        Janitor {
            worker: Worker::new(ports.clone(), config),
            ports,
        }
    }

    pub async fn tick(&self) -> Result<TickReport, StoreError> {
        let now = self.ports.clock.now();
        let mut report = TickReport::default();
        // Only jobs that may need us (indexed where the store can), not every open job:
        // a tick must stay cheap however many jobs wait.
        let open = self.ports.store.jobs_due(now).await?;
        let mut batches = BTreeSet::new();
        for job in &open {
            if now >= job.timeout_at {
                self.worker.time_out(&job.job_id).await?;
                report.timed_out.push(job.job_id.clone());
                continue;
            }
            if job.status == JobStatus::Running && job.lease_until.is_none_or(|l| l <= now) {
                // Its worker died; a fresh message lets another take it over.
                self.ports
                    .queue
                    .send(&job.job_id, job.priority, Duration::ZERO)
                    .await?;
                report.requeued.push(job.job_id.clone());
            }
            if let Some(batch) = &job.batch_id {
                if job.status == JobStatus::Pending && !job.queued {
                    batches.insert(batch.clone());
                }
            }
        }
        for batch in &batches {
            admit_waiting(&self.ports, batch).await?;
        }
        report.batches_repaired = batches.len();
        Ok(report)
    }

    /// Ticks every `period` until `shutdown` turns true.
    pub async fn run(&self, period: Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e, "janitor tick failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = shutdown.changed() => {
                    if *shutdown.borrow() { return; }
                }
            }
        }
    }
}
