//! `JobStore` on one DynamoDB table (architecture.md, "AWS adapters and data model").
//!
//! | item        | pk              | sk                   | GSI1 (gsi1pk / gsi1sk)              |
//! |-------------|-----------------|----------------------|-------------------------------------|
//! | job         | `JOB#<id>`      | `META`               | `JOBS#<yyyy-mm-dd>` / `<created>#<id>` |
//! | log entry   | `JOB#<id>`      | `LOG#<µs>#<seq>`     |                                     |
//! | log counter | `JOB#<id>`      | `LOGSEQ`             |                                     |
//! | batch       | `BATCH#<id>`    | `META`               |                                     |
//! | cache entry | `CACHE#<key>`   | `META`               | `CACHE` / `<key>`                   |
//! | counters    | `STATS`         | `CACHE`              |                                     |
//! | job day     | `JOBDAYS`       | `<yyyy-mm-dd>`       |                                     |
//!
//! Each record is stored whole as JSON (`record`), as in the SQLite adapter, with the
//! attributes that conditions and keys need beside it. `version` guards every replace (a
//! conditional write that can lose). `expires_at` is the TTL attribute in epoch seconds,
//! rounded up so DynamoDB never deletes an item early; `expires_us` keeps the exact instant
//! for conditions, and every read drops items whose record has expired, because TTL deletes
//! lazily (up to days later).
//!
//! Listing walks the GSI1 day partitions newest first. The `JOBDAYS` items name the days
//! that have jobs (each expires with the latest job of its day), so a listing never probes
//! empty days. A job's expiry is fixed when it is created (the core never changes it), so
//! only `insert_job` maintains them.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, WriteRequest};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::DeserializeOwned;
use vacal_core::domain::{Batch, CacheEntry, Job, JobStatus, LogEntry, LogLevel};
use vacal_core::ports::{
    CacheCounter, CacheCounters, JobFilter, JobStore, StoreError, StoreResult, Write,
};

use crate::{sdk_error, GSI1};

type Item = HashMap<String, AttributeValue>;

const META: &str = "META";
const LOG_SEQ: &str = "LOGSEQ";
const DAYS_PK: &str = "JOBDAYS";
const CACHE_GSI_PK: &str = "CACHE";
const STATS_PK: &str = "STATS";
const STATS_SK: &str = "CACHE";
/// BatchWriteItem takes at most 25 requests.
const BATCH_WRITE_MAX: usize = 25;

/// Jobs, logs, batches, the cache index and counters in one DynamoDB table. Cheap to clone.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
    /// Lifetime of log entries (the port passes no expiry for them): the job retention, so
    /// logs expire with their job.
    log_retention: Duration,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn job_pk(job_id: &str) -> String {
    format!("JOB#{job_id}")
}

fn batch_pk(batch_id: &str) -> String {
    format!("BATCH#{batch_id}")
}

fn cache_pk(key: &str) -> String {
    format!("CACHE#{key}")
}

fn key(pk: String, sk: &str) -> Item {
    HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
}

/// Epoch seconds, rounded up: the TTL attribute. An item is live while `now < expires`, so
/// rounding down would let TTL delete it up to a second early.
fn ttl_seconds(t: DateTime<Utc>) -> i64 {
    let secs = t.timestamp();
    if t.timestamp_subsec_nanos() > 0 {
        secs + 1
    } else {
        secs
    }
}

/// `2024-01-15T14:25:00.123456Z`: fixed width, so strings sort as the instants do.
fn sortable(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn day(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

fn other(message: String) -> StoreError {
    StoreError::Other(message)
}

fn record<T: DeserializeOwned>(item: &Item) -> StoreResult<T> {
    let raw = match item.get("record") {
        Some(AttributeValue::S(raw)) => raw,
        _ => return Err(other("stored item has no record".into())),
    };
    serde_json::from_str(raw).map_err(|e| other(format!("bad stored record: {e}")))
}

fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| other(format!("cannot serialise a record: {e}")))
}

fn number(item: &Item, name: &str) -> u64 {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v.parse().unwrap_or(0),
        _ => 0,
    }
}

fn string<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Some(v),
        _ => None,
    }
}

/// The attributes every stored record carries: its JSON, TTL and exact expiry.
fn base_item(pk: String, sk: &str, json: String, expires: DateTime<Utc>) -> Item {
    let mut item = key(pk, sk);
    item.insert("record".into(), s(json));
    item.insert("expires_at".into(), n(ttl_seconds(expires)));
    item.insert("expires_us".into(), n(expires.timestamp_micros()));
    item
}

fn job_item(job: &Job) -> StoreResult<Item> {
    let mut item = base_item(job_pk(&job.job_id), META, to_json(job)?, job.expires_at);
    item.insert("version".into(), n(job.version));
    // Copies for people reading the table; the record is what the code reads.
    item.insert("status".into(), s(job.status.as_str()));
    item.insert("gsi1pk".into(), s(format!("JOBS#{}", day(job.created_at))));
    item.insert(
        "gsi1sk".into(),
        s(format!("{}#{}", sortable(job.created_at), job.job_id)),
    );
    Ok(item)
}

fn batch_item(batch: &Batch) -> StoreResult<Item> {
    let mut item = base_item(
        batch_pk(&batch.batch_id),
        META,
        to_json(batch)?,
        batch.expires_at,
    );
    item.insert("version".into(), n(batch.version));
    Ok(item)
}

fn matches(job: &Job, filter: &JobFilter) -> bool {
    filter.status.is_none_or(|s| job.status == s)
        && filter
            .job_type
            .as_ref()
            .is_none_or(|t| job.job_type.as_str() == t)
        && filter
            .age_group
            .as_ref()
            .is_none_or(|a| job.age_group.as_ref() == Some(a))
        && filter.country.as_ref().is_none_or(|c| {
            job.country
                .as_ref()
                .is_some_and(|jc| jc.to_lowercase() == c.to_lowercase())
        })
        && filter
            .batch_id
            .as_ref()
            .is_none_or(|b| job.batch_id.as_ref() == Some(b))
        && filter.created_after.is_none_or(|t| job.created_at >= t)
        && filter.created_before.is_none_or(|t| job.created_at <= t)
}

impl DynamoStore {
    /// The store over `table` (keys `pk`/`sk`, index `GSI1`, TTL on `expires_at`).
    /// `log_retention` is how long log entries live (the job retention).
    pub fn new(client: Client, table: &str, log_retention: Duration) -> Self {
        DynamoStore {
            client,
            table: table.to_string(),
            log_retention,
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    async fn get_item(&self, pk: String, sk: &str) -> StoreResult<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            // The worker's claim and every conditional update read-modify-write: a stale
            // read would only make them lose, but it would lose needlessly.
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("DynamoDB GetItem", &e))?;
        Ok(out.item)
    }

    /// Puts `item` if `condition` holds; `Lost` when it does not.
    async fn put_if(
        &self,
        item: Item,
        condition: &str,
        values: Option<Item>,
    ) -> StoreResult<Write> {
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .set_expression_attribute_values(values)
            .send()
            .await;
        match res {
            Ok(_) => Ok(Write::Done),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                Ok(Write::Lost)
            }
            Err(e) => Err(sdk_error("DynamoDB PutItem", &e)),
        }
    }

    /// Puts a new record; an existing one with the same key is an error naming `what`.
    async fn put_new(&self, item: Item, what: impl FnOnce() -> String) -> StoreResult<()> {
        match self.put_if(item, "attribute_not_exists(pk)", None).await? {
            Write::Done => Ok(()),
            Write::Lost => Err(other(format!("{} already exists", what()))),
        }
    }

    /// Replaces a record carrying `version` if the stored one carries `version − 1`.
    async fn put_next_version(&self, item: Item, version: u64) -> StoreResult<Write> {
        // Version 0 has no predecessor: nothing can match.
        let Some(expected) = version.checked_sub(1) else {
            return Ok(Write::Lost);
        };
        // A missing item has no version, so the comparison is false: a lost update never
        // creates (or resurrects) a record.
        self.put_if(
            item,
            "version = :expected",
            Some(HashMap::from([(":expected".to_string(), n(expected))])),
        )
        .await
    }

    /// Every item of a query, following pages.
    async fn query_all(
        &self,
        index: Option<&str>,
        condition: &str,
        values: Item,
        newest_first: bool,
        keys_only: bool,
    ) -> StoreResult<Vec<Item>> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .set_index_name(index.map(str::to_string))
                .key_condition_expression(condition)
                .set_expression_attribute_values(Some(values.clone()))
                .scan_index_forward(!newest_first)
                .set_exclusive_start_key(start.take());
            if keys_only {
                query = query.projection_expression("pk, sk");
            }
            if index.is_none() && !keys_only {
                query = query.consistent_read(true);
            }
            let out = query
                .send()
                .await
                .map_err(|e| sdk_error("DynamoDB Query", &e))?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(items),
            }
        }
    }

    /// Deletes items by key, 25 at a time, retrying what DynamoDB left unprocessed.
    async fn delete_keys(&self, keys: Vec<Item>) -> StoreResult<()> {
        for chunk in keys.chunks(BATCH_WRITE_MAX) {
            let mut requests = chunk
                .iter()
                .map(|k| {
                    let delete = DeleteRequest::builder()
                        .set_key(Some(k.clone()))
                        .build()
                        .map_err(|e| other(format!("delete request: {e}")))?;
                    Ok(WriteRequest::builder().delete_request(delete).build())
                })
                .collect::<StoreResult<Vec<_>>>()?;
            for attempt in 0..8u32 {
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, requests)
                    .send()
                    .await
                    .map_err(|e| sdk_error("DynamoDB BatchWriteItem", &e))?;
                requests = out
                    .unprocessed_items
                    .and_then(|mut u| u.remove(&self.table))
                    .unwrap_or_default();
                if requests.is_empty() {
                    break;
                }
                if attempt == 7 {
                    return Err(StoreError::Unavailable(
                        "DynamoDB BatchWriteItem left items unprocessed".into(),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(25 << attempt)).await;
            }
        }
        Ok(())
    }

    /// Days that have live jobs, newest first, within `[from, to]` when given.
    async fn job_days(
        &self,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<String>> {
        let items = self
            .query_all(
                None,
                "pk = :pk",
                HashMap::from([(":pk".to_string(), s(DAYS_PK))]),
                true,
                false,
            )
            .await?;
        let (from, to) = (from.map(day), to.map(day));
        Ok(items
            .iter()
            .filter(|item| number(item, "expires_us") as i64 > now.timestamp_micros())
            .filter_map(|item| string(item, "sk").map(str::to_string))
            .filter(|d| from.as_ref().is_none_or(|f| d >= f) && to.as_ref().is_none_or(|t| d <= t))
            .collect())
    }

    /// Live jobs matching `filter`, newest first (ties by job_id, descending).
    async fn scan_jobs(&self, filter: &JobFilter, now: DateTime<Utc>) -> StoreResult<Vec<Job>> {
        let mut jobs = Vec::new();
        for d in self
            .job_days(filter.created_after, filter.created_before, now)
            .await?
        {
            let items = self
                .query_all(
                    Some(GSI1),
                    "gsi1pk = :pk",
                    HashMap::from([(":pk".to_string(), s(format!("JOBS#{d}")))]),
                    true,
                    false,
                )
                .await?;
            for item in &items {
                let job: Job = record(item)?;
                if job.expires_at > now && matches(&job, filter) {
                    jobs.push(job);
                }
            }
        }
        // The index order already is this; sorting again makes it independent of how
        // DynamoDB orders equal-prefix keys and of day boundaries.
        jobs.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.job_id.cmp(&a.job_id))
        });
        Ok(jobs)
    }
}

#[async_trait]
impl JobStore for DynamoStore {
    async fn insert_job(&self, job: &Job) -> StoreResult<()> {
        // The day marker first: a marker without a job costs one empty query, a job
        // without a marker would never be listed.
        let expires = job.expires_at;
        let marked = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(DAYS_PK.into(), &day(job.created_at))))
            .update_expression("SET expires_at = :ttl, expires_us = :us")
            .condition_expression("attribute_not_exists(expires_us) OR expires_us < :us")
            .expression_attribute_values(":ttl", n(ttl_seconds(expires)))
            .expression_attribute_values(":us", n(expires.timestamp_micros()))
            .send()
            .await;
        match marked {
            Ok(_) => {}
            // A later job of the same day already set a later expiry.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) => {}
            Err(e) => return Err(sdk_error("DynamoDB UpdateItem (job day)", &e)),
        }
        self.put_new(job_item(job)?, || format!("job {}", job.job_id))
            .await
    }

    async fn get_job(&self, job_id: &str, now: DateTime<Utc>) -> StoreResult<Option<Job>> {
        let Some(item) = self.get_item(job_pk(job_id), META).await? else {
            return Ok(None);
        };
        let job: Job = record(&item)?;
        Ok((job.expires_at > now).then_some(job))
    }

    async fn update_job(&self, job: &Job) -> StoreResult<Write> {
        self.put_next_version(job_item(job)?, job.version).await
    }

    async fn delete_job(&self, job_id: &str) -> StoreResult<u64> {
        let keys = self
            .query_all(
                None,
                "pk = :pk",
                HashMap::from([(":pk".to_string(), s(job_pk(job_id)))]),
                false,
                true,
            )
            .await?;
        // The log counter is bookkeeping, not one of the job's items.
        let counted = keys
            .iter()
            .filter(|k| string(k, "sk") != Some(LOG_SEQ))
            .count() as u64;
        self.delete_keys(keys).await?;
        Ok(counted)
    }

    async fn list_jobs(
        &self,
        filter: &JobFilter,
        offset: u64,
        limit: u64,
        now: DateTime<Utc>,
    ) -> StoreResult<(Vec<Job>, u64)> {
        let jobs = self.scan_jobs(filter, now).await?;
        let total = jobs.len() as u64;
        let page = jobs
            .into_iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .collect();
        Ok((page, total))
    }

    async fn jobs_by_status(
        &self,
        statuses: &[JobStatus],
        since: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Job>> {
        if statuses.is_empty() {
            return Ok(Vec::new());
        }
        let filter = JobFilter {
            created_after: since,
            ..JobFilter::default()
        };
        let mut jobs = self.scan_jobs(&filter, now).await?;
        jobs.retain(|j| statuses.contains(&j.status));
        Ok(jobs)
    }

    async fn append_log(
        &self,
        job_id: &str,
        entry: &LogEntry,
        max_entries: u64,
    ) -> StoreResult<()> {
        // A per-job sequence (atomic ADD) orders entries with equal timestamps by append
        // order and tells when the job may have more than `max_entries`.
        let expires = entry.timestamp
            + chrono::Duration::from_std(self.log_retention).unwrap_or(chrono::Duration::MAX);
        let counter = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(job_pk(job_id), LOG_SEQ)))
            .update_expression("ADD seq :one SET expires_at = :ttl")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":ttl", n(ttl_seconds(expires)))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| sdk_error("DynamoDB UpdateItem (log sequence)", &e))?;
        let seq = counter
            .attributes
            .as_ref()
            .map(|a| number(a, "seq"))
            .unwrap_or(0);
        let micros = entry.timestamp.timestamp_micros().max(0);
        let sk = format!("LOG#{micros:020}#{seq:012}");
        let mut item = base_item(job_pk(job_id), &sk, to_json(entry)?, expires);
        item.insert("level".into(), s(entry.level.as_str()));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| sdk_error("DynamoDB PutItem (log)", &e))?;
        if seq > max_entries {
            let mut keys = self
                .query_all(
                    None,
                    "pk = :pk AND begins_with(sk, :log)",
                    HashMap::from([
                        (":pk".to_string(), s(job_pk(job_id))),
                        (":log".to_string(), s("LOG#")),
                    ]),
                    true,
                    true,
                )
                .await?;
            let excess = keys.len().saturating_sub(max_entries as usize);
            if excess > 0 {
                let oldest = keys.split_off(keys.len() - excess);
                self.delete_keys(oldest).await?;
            }
        }
        Ok(())
    }

    async fn logs(
        &self,
        job_id: &str,
        level: Option<LogLevel>,
        offset: u64,
        limit: u64,
    ) -> StoreResult<Vec<LogEntry>> {
        let items = self
            .query_all(
                None,
                "pk = :pk AND begins_with(sk, :log)",
                HashMap::from([
                    (":pk".to_string(), s(job_pk(job_id))),
                    (":log".to_string(), s("LOG#")),
                ]),
                true,
                false,
            )
            .await?;
        items
            .iter()
            .filter(|item| level.is_none_or(|l| string(item, "level") == Some(l.as_str())))
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(record)
            .collect()
    }

    async fn insert_batch(&self, batch: &Batch) -> StoreResult<()> {
        self.put_new(batch_item(batch)?, || format!("batch {}", batch.batch_id))
            .await
    }

    async fn get_batch(&self, batch_id: &str, now: DateTime<Utc>) -> StoreResult<Option<Batch>> {
        let Some(item) = self.get_item(batch_pk(batch_id), META).await? else {
            return Ok(None);
        };
        let batch: Batch = record(&item)?;
        Ok((batch.expires_at > now).then_some(batch))
    }

    async fn update_batch(&self, batch: &Batch) -> StoreResult<Write> {
        self.put_next_version(batch_item(batch)?, batch.version)
            .await
    }

    async fn put_cache_entry(&self, entry: &CacheEntry) -> StoreResult<Write> {
        let mut item = base_item(
            cache_pk(&entry.cache_key),
            META,
            to_json(entry)?,
            entry.expires_at,
        );
        item.insert("gsi1pk".into(), s(CACHE_GSI_PK));
        item.insert("gsi1sk".into(), s(entry.cache_key.clone()));
        // The port passes no `now`; the entry's own `cached_at` is the writer's now. An
        // entry that expired may be replaced even before TTL deletes it.
        self.put_if(
            item,
            "attribute_not_exists(pk) OR expires_us <= :now",
            Some(HashMap::from([(
                ":now".to_string(),
                n(entry.cached_at.timestamp_micros()),
            )])),
        )
        .await
    }

    async fn get_cache_entry(
        &self,
        cache_key: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<CacheEntry>> {
        let Some(item) = self.get_item(cache_pk(cache_key), META).await? else {
            return Ok(None);
        };
        let entry: CacheEntry = record(&item)?;
        Ok((entry.expires_at > now).then_some(entry))
    }

    async fn cache_entries(&self, now: DateTime<Utc>) -> StoreResult<Vec<CacheEntry>> {
        let items = self
            .query_all(
                Some(GSI1),
                "gsi1pk = :pk",
                HashMap::from([(":pk".to_string(), s(CACHE_GSI_PK))]),
                false,
                false,
            )
            .await?;
        let mut entries = Vec::with_capacity(items.len());
        for item in &items {
            let entry: CacheEntry = record(item)?;
            if entry.expires_at > now {
                entries.push(entry);
            }
        }
        Ok(entries)
    }

    async fn delete_cache_entry(&self, cache_key: &str) -> StoreResult<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(cache_pk(cache_key), META)))
            .send()
            .await
            .map_err(|e| sdk_error("DynamoDB DeleteItem", &e))?;
        Ok(())
    }

    async fn count_cache(&self, counter: CacheCounter) -> StoreResult<()> {
        let name = match counter {
            CacheCounter::Hit => "hits",
            CacheCounter::Miss => "misses",
        };
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(STATS_PK.into(), STATS_SK)))
            .update_expression("ADD #c :one")
            .expression_attribute_names("#c", name)
            .expression_attribute_values(":one", n(1))
            .send()
            .await
            .map_err(|e| sdk_error("DynamoDB UpdateItem (counter)", &e))?;
        Ok(())
    }

    async fn cache_counters(&self) -> StoreResult<CacheCounters> {
        let item = self.get_item(STATS_PK.into(), STATS_SK).await?;
        Ok(
            item.map_or_else(CacheCounters::default, |item| CacheCounters {
                hits: number(&item, "hits"),
                misses: number(&item, "misses"),
            }),
        )
    }

    async fn ping(&self) -> StoreResult<()> {
        // A key read needs only the GetItem permission the API has anyway.
        self.get_item(STATS_PK.into(), STATS_SK).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up_and_sort_keys_sort_as_instants() {
        let t = DateTime::parse_from_rfc3339("2024-01-15T14:25:00.5Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(ttl_seconds(t), 1_705_328_701);
        let whole = DateTime::from_timestamp(1_705_328_700, 0).unwrap();
        assert_eq!(ttl_seconds(whole), 1_705_328_700);
        let earlier = t - chrono::Duration::microseconds(1);
        assert!(sortable(earlier) < sortable(t));
        assert_eq!(sortable(t), "2024-01-15T14:25:00.500000Z");
        assert_eq!(day(t), "2024-01-15");
    }
}
