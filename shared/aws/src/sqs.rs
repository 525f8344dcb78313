//! `JobQueue` on SQS: one standard queue per priority band (high 8–10, normal 4–7, low
//! 1–3), each with its dead-letter queue. `receive` drains higher bands first, so priority
//! holds between bands; within a band SQS gives no order (the port promises best effort).
//! SQS counts delays and visibility in whole seconds: durations are rounded up.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use aws_sdk_sqs::Client;
use serde::{Deserialize, Serialize};
use vacal_core::ports::{Delivery, JobQueue, StoreError, StoreResult};

use crate::sdk_error;

/// SQS limits: 15 minutes of delay, 12 hours of visibility, 10 messages per receive.
const MAX_DELAY_SECS: u64 = 900;
const MAX_VISIBILITY_SECS: u64 = 43_200;
const MAX_RECEIVE: u32 = 10;

/// A priority band, highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Band {
    High,
    Normal,
    Low,
}

impl Band {
    pub const ALL: [Band; 3] = [Band::High, Band::Normal, Band::Low];

    pub fn of_priority(priority: u8) -> Band {
        match priority {
            8.. => Band::High,
            4..=7 => Band::Normal,
            _ => Band::Low,
        }
    }

    fn tag(self) -> char {
        match self {
            Band::High => 'h',
            Band::Normal => 'n',
            Band::Low => 'l',
        }
    }

    fn from_tag(tag: char) -> Option<Band> {
        Band::ALL.into_iter().find(|b| b.tag() == tag)
    }
}

/// One queue URL per band.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueUrls {
    pub high: String,
    pub normal: String,
    pub low: String,
}

impl QueueUrls {
    pub fn of(&self, band: Band) -> &str {
        match band {
            Band::High => &self.high,
            Band::Normal => &self.normal,
            Band::Low => &self.low,
        }
    }
}

/// The message body: the job to run, and its priority so a retry goes back to its band.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobMessage {
    pub job_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
}

impl JobMessage {
    /// Parses a message body; `None` when it is not a job message (a poison message).
    /// A priority that is not a number from 1 to 10 is ignored, not fatal: the job ID is
    /// what matters, the priority only picks the band of a retry.
    pub fn parse(body: &str) -> Option<JobMessage> {
        let value: serde_json::Value = serde_json::from_str(body).ok()?;
        let job_id = value.get("job_id")?.as_str()?;
        let valid = !job_id.is_empty()
            && job_id.len() <= 128
            && job_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        let priority = value
            .get("priority")
            .and_then(|p| p.as_u64())
            .filter(|p| (1..=10).contains(p))
            .map(|p| p as u8);
        valid.then(|| JobMessage {
            job_id: job_id.to_string(),
            priority,
        })
    }
}

fn whole_seconds(d: Duration, max: u64) -> i32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.min(max) as i32
}

/// `<band tag>:<SQS receipt handle>`: ack and release must know the queue.
fn receipt(band: Band, handle: &str) -> String {
    format!("{}:{handle}", band.tag())
}

fn parse_receipt(receipt: &str) -> StoreResult<(Band, &str)> {
    let mut chars = receipt.chars();
    let band = chars.next().and_then(Band::from_tag);
    match (band, receipt.get(1..2), receipt.get(2..)) {
        (Some(band), Some(":"), Some(handle)) if !handle.is_empty() => Ok((band, handle)),
        _ => Err(StoreError::Other(format!(
            "not a receipt of this queue: {receipt:?}"
        ))),
    }
}

/// Whether an error only says the receipt no longer names an in-flight message (acked,
/// expired or redelivered): settling such a receipt is a no-op, as the port requires.
fn is_stale_receipt<E: ProvideErrorMetadata>(e: &E) -> bool {
    let code = e.code().unwrap_or_default();
    let message = e.message().unwrap_or_default().to_ascii_lowercase();
    code.contains("ReceiptHandleIsInvalid")
        || code.contains("MessageNotInflight")
        || (code.contains("InvalidParameterValue") && message.contains("receipt"))
}

/// The job queue: three SQS queues, one per band.
#[derive(Clone, Debug)]
pub struct SqsQueue {
    client: Client,
    urls: QueueUrls,
}

impl SqsQueue {
    pub fn new(client: Client, urls: QueueUrls) -> Self {
        SqsQueue { client, urls }
    }

    pub fn urls(&self) -> &QueueUrls {
        &self.urls
    }
}

/// Receives up to `max` messages from one queue without waiting (a short poll). A short poll
/// may answer with fewer messages than are visible, even none (SQS samples a subset of its
/// servers), which [`JobQueue::receive`] allows: every caller polls again later (the local
/// worker loop, the janitor's next run), and tests that need a message poll until a deadline.
async fn receive_from(
    client: &Client,
    url: &str,
    max: u32,
    visibility: Duration,
) -> StoreResult<Vec<aws_sdk_sqs::types::Message>> {
    let out = client
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(max.min(MAX_RECEIVE) as i32)
        .visibility_timeout(whole_seconds(visibility, MAX_VISIBILITY_SECS))
        .wait_time_seconds(0)
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
        .send()
        .await
        .map_err(|e| sdk_error("SQS ReceiveMessage", &e))?;
    Ok(out.messages.unwrap_or_default())
}

fn receive_count(m: &aws_sdk_sqs::types::Message) -> u32 {
    m.attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|c| c.parse().ok())
        .unwrap_or(1)
}

async fn delete(client: &Client, url: &str, handle: &str) -> StoreResult<()> {
    match client
        .delete_message()
        .queue_url(url)
        .receipt_handle(handle)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(is_stale_receipt) => Ok(()),
        Err(e) => Err(sdk_error("SQS DeleteMessage", &e)),
    }
}

#[async_trait]
impl JobQueue for SqsQueue {
    async fn send(&self, job_id: &str, priority: u8, delay: Duration) -> StoreResult<()> {
        let body = serde_json::to_string(&JobMessage {
            job_id: job_id.to_string(),
            priority: Some(priority),
        })
        .map_err(|e| StoreError::Other(e.to_string()))?;
        self.client
            .send_message()
            .queue_url(self.urls.of(Band::of_priority(priority)))
            .message_body(body)
            .delay_seconds(whole_seconds(delay, MAX_DELAY_SECS))
            .send()
            .await
            .map_err(|e| sdk_error("SQS SendMessage", &e))?;
        Ok(())
    }

    async fn receive(&self, max: u32, visibility: Duration) -> StoreResult<Vec<Delivery>> {
        let mut deliveries = Vec::new();
        for band in Band::ALL {
            let wanted = max.saturating_sub(deliveries.len() as u32);
            if wanted == 0 {
                break;
            }
            let url = self.urls.of(band);
            for m in receive_from(&self.client, url, wanted, visibility).await? {
                let handle = m.receipt_handle().unwrap_or_default();
                match m.body().and_then(JobMessage::parse) {
                    Some(msg) => deliveries.push(Delivery {
                        job_id: msg.job_id,
                        receipt: receipt(band, handle),
                        receive_count: receive_count(&m),
                    }),
                    None => {
                        // Nothing can ever process it: drop it rather than redeliver it.
                        tracing::warn!(body = ?m.body(), "dropping a queue message that names no job");
                        delete(&self.client, url, handle).await?;
                    }
                }
            }
        }
        Ok(deliveries)
    }

    async fn ack(&self, receipt: &str) -> StoreResult<()> {
        let (band, handle) = parse_receipt(receipt)?;
        delete(&self.client, self.urls.of(band), handle).await
    }

    async fn release(&self, receipt: &str, delay: Duration) -> StoreResult<()> {
        let (band, handle) = parse_receipt(receipt)?;
        match self
            .client
            .change_message_visibility()
            .queue_url(self.urls.of(band))
            .receipt_handle(handle)
            .visibility_timeout(whole_seconds(delay, MAX_VISIBILITY_SECS))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(is_stale_receipt) => Ok(()),
            Err(e) => Err(sdk_error("SQS ChangeMessageVisibility", &e)),
        }
    }

    async fn depth(&self) -> StoreResult<u64> {
        let mut total = 0;
        for band in Band::ALL {
            let out = self
                .client
                .get_queue_attributes()
                .queue_url(self.urls.of(band))
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
                .send()
                .await
                .map_err(|e| sdk_error("SQS GetQueueAttributes", &e))?;
            total += out
                .attributes()
                .map(|a| {
                    a.values()
                        .filter_map(|v| v.parse::<u64>().ok())
                        .sum::<u64>()
                })
                .unwrap_or(0);
        }
        Ok(total)
    }
}

/// A message that SQS moved to a dead-letter queue after too many failed deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The job it names; `None` for a body that names none.
    pub job_id: Option<String>,
    pub body: String,
    /// Deliveries before it was dead-lettered (and since).
    pub receive_count: u32,
    pub band: Band,
    /// For [`SqsDeadLetters::delete`].
    pub receipt: String,
}

/// The three dead-letter queues, read by the janitor.
#[derive(Clone, Debug)]
pub struct SqsDeadLetters {
    client: Client,
    urls: QueueUrls,
}

impl SqsDeadLetters {
    pub fn new(client: Client, urls: QueueUrls) -> Self {
        SqsDeadLetters { client, urls }
    }

    /// Up to `max` dead letters (any band), hidden for `visibility` until deleted.
    pub async fn receive(&self, max: u32, visibility: Duration) -> StoreResult<Vec<DeadLetter>> {
        let mut letters = Vec::new();
        for band in Band::ALL {
            let wanted = max.saturating_sub(letters.len() as u32);
            if wanted == 0 {
                break;
            }
            for m in receive_from(&self.client, self.urls.of(band), wanted, visibility).await? {
                let body = m.body().unwrap_or_default().to_string();
                letters.push(DeadLetter {
                    job_id: JobMessage::parse(&body).map(|j| j.job_id),
                    receive_count: receive_count(&m),
                    receipt: receipt(band, m.receipt_handle().unwrap_or_default()),
                    body,
                    band,
                });
            }
        }
        Ok(letters)
    }

    pub async fn delete(&self, receipt: &str) -> StoreResult<()> {
        let (band, handle) = parse_receipt(receipt)?;
        delete(&self.client, self.urls.of(band), handle).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_follow_the_design() {
        let bands: Vec<Band> = (1..=10).map(Band::of_priority).collect();
        assert_eq!(&bands[..3], &[Band::Low; 3]);
        assert_eq!(&bands[3..7], &[Band::Normal; 4]);
        assert_eq!(&bands[7..], &[Band::High; 3]);
    }

    #[test]
    fn receipts_round_trip_and_foreign_ones_are_refused() {
        let r = receipt(Band::Normal, "AQEB+x/y==");
        assert_eq!(parse_receipt(&r).unwrap(), (Band::Normal, "AQEB+x/y=="));
        for bad in ["", "h", "h:", "x:abc", "abc"] {
            assert!(parse_receipt(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_round_up_to_seconds_within_limits() {
        assert_eq!(whole_seconds(Duration::ZERO, 900), 0);
        assert_eq!(whole_seconds(Duration::from_millis(200), 900), 1);
        assert_eq!(whole_seconds(Duration::from_secs(2), 900), 2);
        assert_eq!(whole_seconds(Duration::from_secs(5000), 900), 900);
    }

    #[test]
    fn message_bodies() {
        assert_eq!(
            JobMessage::parse(r#"{"job_id":"job_0123456789ab"}"#),
            Some(JobMessage {
                job_id: "job_0123456789ab".into(),
                priority: None
            })
        );
        assert_eq!(
            JobMessage::parse(r#"{"job_id":"job_1","priority":9}"#).and_then(|m| m.priority),
            Some(9)
        );
        assert_eq!(
            JobMessage::parse(r#"{"job_id":"job_1","priority":"high"}"#),
            Some(JobMessage {
                job_id: "job_1".into(),
                priority: None
            })
        );
        for bad in [
            "",
            "not json",
            "{}",
            r#"{"job_id":""}"#,
            r#"{"job_id":"a/b"}"#,
            "[1]",
        ] {
            assert_eq!(JobMessage::parse(bad), None, "{bad:?}");
        }
    }
}
