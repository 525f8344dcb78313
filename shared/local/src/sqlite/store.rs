//! `JobStore`: jobs, logs, batches, the cache index and its counters.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use vacal_core::domain::{Batch, CacheEntry, Job, JobStatus, LogEntry, LogLevel};
use vacal_core::ports::{
    insert_job_queued_in_steps, CacheCounter, CacheCounters, InsertQueuedError, JobFilter,
    JobQueue, JobStore, StoreResult, Write,
};

use super::queue::insert_queue_row;
use super::{int, is_duplicate, nanos, other, parse, Failure, SqliteStore};

const JOB_COLUMNS: &str = "job_id, version, status, job_type, created_at, age_group, country, \
     batch_id, expires_at, record, due_at";
pub(super) const NEWEST_FIRST: &str = "ORDER BY created_at DESC, job_id DESC";

/// The values of `JOB_COLUMNS` for a job.
pub(super) fn job_row(job: &Job) -> Result<[SqlValue; 11], Failure> {
    let text = |s: &Option<String>| s.clone().map_or(SqlValue::Null, SqlValue::Text);
    Ok([
        SqlValue::Text(job.job_id.clone()),
        SqlValue::Integer(int(job.version)),
        SqlValue::Text(job.status.as_str().to_string()),
        SqlValue::Text(job.job_type.as_str().to_string()),
        SqlValue::Integer(nanos(job.created_at)),
        text(&job.age_group),
        text(&job.country.as_ref().map(|c| c.to_lowercase())),
        text(&job.batch_id),
        SqlValue::Integer(nanos(job.expires_at)),
        SqlValue::Text(serde_json::to_string(job)?),
        job.janitor_due_at()
            .map_or(SqlValue::Null, |t| SqlValue::Integer(nanos(t))),
    ])
}

/// Inserts a job row; a clash of IDs is an error naming the job.
fn insert_job_row(conn: &Connection, job_id: &str, row: &[SqlValue]) -> Result<(), Failure> {
    let sql = format!(
        "INSERT INTO jobs ({JOB_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
    );
    match conn
        .prepare_cached(&sql)?
        .execute(params_from_iter(row.iter()))
    {
        Ok(_) => Ok(()),
        Err(e) if is_duplicate(&e) => Err(other(format!("job {job_id} already exists"))),
        Err(e) => Err(e.into()),
    }
}

/// Appends a log row and drops the job's entries past the newest `max_entries`.
fn insert_log_row(
    conn: &Connection,
    job_id: &str,
    level: &str,
    ts: i64,
    record: &str,
    max_entries: u64,
) -> Result<(), Failure> {
    conn.prepare_cached("INSERT INTO logs (job_id, level, ts, entry) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![job_id, level, ts, record])?;
    // Counting first is cheap (a job has a few entries), and SQLite compiles the trimming
    // DELETE afresh on every run (it cost a quarter of the writer's time when run always).
    let count: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM logs WHERE job_id = ?1")?
        .query_row([job_id], |r| r.get(0))?;
    if count > int(max_entries) {
        conn.prepare_cached(
            "DELETE FROM logs WHERE seq IN (SELECT seq FROM logs WHERE job_id = ?1 \
             ORDER BY ts DESC, seq DESC LIMIT -1 OFFSET ?2)",
        )?
        .execute(params![job_id, int(max_entries)])?;
    }
    Ok(())
}

pub(super) fn query_jobs(
    conn: &Connection,
    sql: &str,
    args: &[SqlValue],
) -> Result<Vec<Job>, Failure> {
    let mut stmt = conn.prepare_cached(sql)?;
    let records = stmt
        .query_map(params_from_iter(args.iter()), |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    records.iter().map(|r| parse(r)).collect()
}

fn counter_name(counter: CacheCounter) -> &'static str {
    match counter {
        CacheCounter::Hit => "hits",
        CacheCounter::Miss => "misses",
    }
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn insert_job(&self, job: &Job) -> StoreResult<()> {
        let row = job_row(job)?;
        let job_id = job.job_id.clone();
        self.write(move |conn| insert_job_row(conn, &job_id, &row))
            .await
    }

    async fn insert_job_queued(
        &self,
        job: &Job,
        logs: &[LogEntry],
        max_log_entries: u64,
        queue: &dyn JobQueue,
    ) -> Result<(), InsertQueuedError> {
        // Only a queue in this very database can share the transaction.
        let ours = queue
            .as_any()
            .and_then(|q| q.downcast_ref::<SqliteStore>())
            .is_some_and(|q| Arc::ptr_eq(&q.inner, &self.inner));
        if job.queued && !ours {
            return insert_job_queued_in_steps(self, job, logs, max_log_entries, queue).await;
        }
        let row = job_row(job).map_err(|f| InsertQueuedError::NotStored(f.into()))?;
        let logs = logs
            .iter()
            .map(|entry| {
                Ok((
                    entry.level.as_str(),
                    nanos(entry.timestamp),
                    serde_json::to_string(entry)?,
                ))
            })
            .collect::<Result<Vec<_>, Failure>>()
            .map_err(|f| InsertQueuedError::NotStored(f.into()))?;
        let job_id = job.job_id.clone();
        let message = job.queued.then_some((job.priority, self.now_micros()));
        // One write: the job, its logs and its message commit together or not at all, so
        // a crash can leave no stored job without a message.
        self.write(move |conn| {
            insert_job_row(conn, &job_id, &row)?;
            for (level, ts, record) in &logs {
                insert_log_row(conn, &job_id, level, *ts, record, max_log_entries)?;
            }
            if let Some((priority, visible_at)) = message {
                insert_queue_row(conn, &job_id, priority, visible_at)?;
            }
            Ok(())
        })
        .await
        .map_err(InsertQueuedError::NotStored)?;
        if message.is_some() {
            self.inner.sends.notify_one();
        }
        Ok(())
    }

    async fn jobs_due(&self, now: DateTime<Utc>) -> StoreResult<Vec<Job>> {
        let now = nanos(now);
        self.read(move |conn| {
            query_jobs(
                conn,
                "SELECT record FROM jobs WHERE due_at <= ?1 AND expires_at > ?1",
                &[SqlValue::Integer(now)],
            )
        })
        .await
    }

    async fn get_job(&self, job_id: &str, now: DateTime<Utc>) -> StoreResult<Option<Job>> {
        let job_id = job_id.to_string();
        self.read(move |conn| {
            let record: Option<String> = conn
                .prepare_cached("SELECT record FROM jobs WHERE job_id = ?1 AND expires_at > ?2")?
                .query_row(params![job_id, nanos(now)], |r| r.get(0))
                .optional()?;
            record.map(|r| parse(&r)).transpose()
        })
        .await
    }

    async fn update_job(&self, job: &Job) -> StoreResult<Write> {
        // Version 0 has no predecessor: nothing can match.
        let Some(expected) = job.version.checked_sub(1) else {
            return Ok(Write::Lost);
        };
        let row = job_row(job)?;
        self.write(move |conn| {
            let expected = SqlValue::Integer(int(expected));
            let args = || row.iter().chain(std::iter::once(&expected));
            // One statement each: the version check and the write cannot be split. The
            // columns a job keeps from its creation are only compared, not set: SQLite
            // rewrites the index entries of every column an UPDATE sets, changed or not,
            // and a status change would otherwise touch all seven indexes.
            let mut changed = conn
                .prepare_cached(
                    "UPDATE jobs SET version = ?2, status = ?3, expires_at = ?9, record = ?10, \
                     due_at = ?11 WHERE job_id = ?1 AND version = ?12 AND job_type = ?4 \
                     AND created_at = ?5 AND age_group IS ?6 AND country IS ?7 \
                     AND batch_id IS ?8",
                )?
                .execute(params_from_iter(args()))?;
            if changed == 0 {
                // Lost, or one of those columns changed after all: the full update decides.
                changed = conn
                    .prepare_cached(
                        "UPDATE jobs SET version = ?2, status = ?3, job_type = ?4, \
                         created_at = ?5, age_group = ?6, country = ?7, batch_id = ?8, \
                         expires_at = ?9, record = ?10, due_at = ?11 \
                         WHERE job_id = ?1 AND version = ?12",
                    )?
                    .execute(params_from_iter(args()))?;
            }
            Ok(if changed == 1 {
                Write::Done
            } else {
                Write::Lost
            })
        })
        .await
    }

    async fn delete_job(&self, job_id: &str) -> StoreResult<u64> {
        let job_id = job_id.to_string();
        self.write(move |conn| {
            let logs = conn
                .prepare_cached("DELETE FROM logs WHERE job_id = ?1")?
                .execute([&job_id])?;
            let jobs = conn
                .prepare_cached("DELETE FROM jobs WHERE job_id = ?1")?
                .execute([&job_id])?;
            Ok((logs + jobs) as u64)
        })
        .await
    }

    async fn list_jobs(
        &self,
        filter: &JobFilter,
        offset: u64,
        limit: u64,
        now: DateTime<Utc>,
    ) -> StoreResult<(Vec<Job>, u64)> {
        let mut conditions = vec!["expires_at > ?"];
        let mut args = vec![SqlValue::Integer(nanos(now))];
        let mut text = |condition: &'static str, value: Option<String>| {
            if let Some(v) = value {
                conditions.push(condition);
                args.push(SqlValue::Text(v));
            }
        };
        text("status = ?", filter.status.map(|s| s.as_str().to_string()));
        text("job_type = ?", filter.job_type.clone());
        text("age_group = ?", filter.age_group.clone());
        text(
            "country = ?",
            filter.country.as_ref().map(|c| c.to_lowercase()),
        );
        text("batch_id = ?", filter.batch_id.clone());
        if let Some(after) = filter.created_after {
            conditions.push("created_at >= ?");
            args.push(SqlValue::Integer(nanos(after)));
        }
        if let Some(before) = filter.created_before {
            conditions.push("created_at <= ?");
            args.push(SqlValue::Integer(nanos(before)));
        }
        let condition = conditions.join(" AND ");
        self.read(move |conn| {
            // One read transaction: the page and the total come from the same snapshot.
            let tx = conn.transaction()?;
            let total: i64 = tx
                .prepare_cached(&format!("SELECT COUNT(*) FROM jobs WHERE {condition}"))?
                .query_row(params_from_iter(args.iter()), |r| r.get(0))?;
            args.push(SqlValue::Integer(int(limit)));
            args.push(SqlValue::Integer(int(offset)));
            let jobs = query_jobs(
                &tx,
                &format!(
                    "SELECT record FROM jobs WHERE {condition} {NEWEST_FIRST} LIMIT ? OFFSET ?"
                ),
                &args,
            )?;
            tx.finish()?;
            Ok((jobs, total as u64))
        })
        .await
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
        let marks = vec!["?"; statuses.len()].join(", ");
        let mut args: Vec<SqlValue> = statuses
            .iter()
            .map(|s| SqlValue::Text(s.as_str().to_string()))
            .collect();
        args.push(SqlValue::Integer(nanos(now)));
        args.push(SqlValue::Integer(since.map_or(i64::MIN, nanos)));
        let sql = format!(
            "SELECT record FROM jobs WHERE status IN ({marks}) AND expires_at > ? \
             AND created_at >= ? {NEWEST_FIRST}"
        );
        self.read(move |conn| query_jobs(conn, &sql, &args)).await
    }

    async fn append_log(
        &self,
        job_id: &str,
        entry: &LogEntry,
        max_entries: u64,
    ) -> StoreResult<()> {
        let job_id = job_id.to_string();
        let level = entry.level.as_str();
        let ts = nanos(entry.timestamp);
        let record = serde_json::to_string(entry).map_err(Failure::from)?;
        self.write(move |conn| insert_log_row(conn, &job_id, level, ts, &record, max_entries))
            .await
    }

    async fn logs(
        &self,
        job_id: &str,
        level: Option<LogLevel>,
        offset: u64,
        limit: u64,
    ) -> StoreResult<Vec<LogEntry>> {
        let job_id = job_id.to_string();
        self.read(move |conn| {
            // An absent level matches every row (`?2 IS NULL`), so one statement serves both.
            let mut stmt = conn.prepare_cached(
                "SELECT entry FROM logs WHERE job_id = ?1 AND (?2 IS NULL OR level = ?2) \
                 ORDER BY ts DESC, seq DESC LIMIT ?3 OFFSET ?4",
            )?;
            let records = stmt
                .query_map(
                    params![job_id, level.map(LogLevel::as_str), int(limit), int(offset)],
                    |r| r.get::<_, String>(0),
                )?
                .collect::<Result<Vec<_>, _>>()?;
            records.iter().map(|r| parse(r)).collect()
        })
        .await
    }

    async fn insert_batch(&self, batch: &Batch) -> StoreResult<()> {
        let batch_id = batch.batch_id.clone();
        let version = int(batch.version);
        let expires = nanos(batch.expires_at);
        let record = serde_json::to_string(batch).map_err(Failure::from)?;
        self.write(move |conn| {
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO batches (batch_id, version, expires_at, record) \
                     VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![batch_id, version, expires, record]);
            match inserted {
                Ok(_) => Ok(()),
                Err(e) if is_duplicate(&e) => {
                    Err(other(format!("batch {batch_id} already exists")))
                }
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    async fn get_batch(&self, batch_id: &str, now: DateTime<Utc>) -> StoreResult<Option<Batch>> {
        let batch_id = batch_id.to_string();
        self.read(move |conn| {
            let record: Option<String> = conn
                .prepare_cached(
                    "SELECT record FROM batches WHERE batch_id = ?1 AND expires_at > ?2",
                )?
                .query_row(params![batch_id, nanos(now)], |r| r.get(0))
                .optional()?;
            record.map(|r| parse(&r)).transpose()
        })
        .await
    }

    async fn update_batch(&self, batch: &Batch) -> StoreResult<Write> {
        let Some(expected) = batch.version.checked_sub(1) else {
            return Ok(Write::Lost);
        };
        let batch_id = batch.batch_id.clone();
        let version = int(batch.version);
        let expires = nanos(batch.expires_at);
        let record = serde_json::to_string(batch).map_err(Failure::from)?;
        self.write(move |conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE batches SET version = ?2, expires_at = ?3, record = ?4 \
                     WHERE batch_id = ?1 AND version = ?5",
                )?
                .execute(params![batch_id, version, expires, record, int(expected)])?;
            Ok(if changed == 1 {
                Write::Done
            } else {
                Write::Lost
            })
        })
        .await
    }

    async fn put_cache_entry(&self, entry: &CacheEntry) -> StoreResult<Write> {
        let key = entry.cache_key.clone();
        let expires = nanos(entry.expires_at);
        // The port passes no `now`; the entry's own `cached_at` is the writer's now.
        let now = nanos(entry.cached_at);
        let record = serde_json::to_string(entry).map_err(Failure::from)?;
        self.write(move |conn| {
            // Insert, or replace only an expired entry; one statement, so it is atomic.
            let changed = conn
                .prepare_cached(
                    "INSERT INTO cache (cache_key, expires_at, record) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (cache_key) DO UPDATE \
                     SET expires_at = excluded.expires_at, record = excluded.record \
                     WHERE cache.expires_at <= ?4",
                )?
                .execute(params![key, expires, record, now])?;
            Ok(if changed == 1 {
                Write::Done
            } else {
                Write::Lost
            })
        })
        .await
    }

    async fn get_cache_entry(
        &self,
        cache_key: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<CacheEntry>> {
        let key = cache_key.to_string();
        self.read(move |conn| {
            let record: Option<String> = conn
                .prepare_cached(
                    "SELECT record FROM cache WHERE cache_key = ?1 AND expires_at > ?2",
                )?
                .query_row(params![key, nanos(now)], |r| r.get(0))
                .optional()?;
            record.map(|r| parse(&r)).transpose()
        })
        .await
    }

    async fn cache_entries(&self, now: DateTime<Utc>) -> StoreResult<Vec<CacheEntry>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT record FROM cache WHERE expires_at > ?1 ORDER BY cache_key",
            )?;
            let records = stmt
                .query_map([nanos(now)], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            records.iter().map(|r| parse(r)).collect()
        })
        .await
    }

    async fn delete_cache_entry(&self, cache_key: &str) -> StoreResult<()> {
        let key = cache_key.to_string();
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM cache WHERE cache_key = ?1")?
                .execute([key])?;
            Ok(())
        })
        .await
    }

    async fn count_cache(&self, counter: CacheCounter) -> StoreResult<()> {
        let name = counter_name(counter);
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO counters (name, value) VALUES (?1, 1) \
                 ON CONFLICT (name) DO UPDATE SET value = value + 1",
            )?
            .execute([name])?;
            Ok(())
        })
        .await
    }

    async fn cache_counters(&self) -> StoreResult<CacheCounters> {
        self.read(|conn| {
            let get = |name: &str| -> Result<u64, Failure> {
                let value: Option<i64> = conn
                    .prepare_cached("SELECT value FROM counters WHERE name = ?1")?
                    .query_row([name], |r| r.get(0))
                    .optional()?;
                Ok(value.unwrap_or(0).max(0) as u64)
            };
            Ok(CacheCounters {
                hits: get(counter_name(CacheCounter::Hit))?,
                misses: get(counter_name(CacheCounter::Miss))?,
            })
        })
        .await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(|conn| {
            conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?;
            Ok(())
        })
        .await
    }
}
