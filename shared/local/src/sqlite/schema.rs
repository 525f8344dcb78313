//! The tables and indexes, connection set-up, and migration from older schemas.

use std::path::Path;

use rusqlite::{params, Connection};

use super::store::query_jobs;
use super::{nanos, other, Failure, BUSY_TIMEOUT};

/// Bumped when the schema changes; a database from a newer version is refused, an older
/// one is migrated (see `migrate`).
pub(super) const SCHEMA_VERSION: i64 = 2;

// Timestamps of records are i64 nanoseconds since the epoch (exact for chrono's values
// within 1677-2262, so orderings agree with the records'); queue times are microseconds of
// the store's clock.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    job_id     TEXT PRIMARY KEY,
    version    INTEGER NOT NULL,
    status     TEXT NOT NULL,
    job_type   TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    age_group  TEXT,
    country    TEXT,            -- lower-cased: the list filter is case-insensitive
    batch_id   TEXT,
    expires_at INTEGER NOT NULL,
    record     TEXT NOT NULL,
    due_at     INTEGER          -- Job::janitor_due_at; NULL once terminal
);
CREATE INDEX IF NOT EXISTS jobs_created   ON jobs (created_at, job_id);
CREATE INDEX IF NOT EXISTS jobs_status    ON jobs (status, created_at, job_id);
CREATE INDEX IF NOT EXISTS jobs_type      ON jobs (job_type, created_at, job_id);
CREATE INDEX IF NOT EXISTS jobs_age_group ON jobs (age_group, created_at, job_id);
CREATE INDEX IF NOT EXISTS jobs_country   ON jobs (country, created_at, job_id);
CREATE INDEX IF NOT EXISTS jobs_batch     ON jobs (batch_id, created_at, job_id);
CREATE INDEX IF NOT EXISTS jobs_expires   ON jobs (expires_at);
CREATE INDEX IF NOT EXISTS jobs_due       ON jobs (due_at) WHERE due_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS logs (
    seq    INTEGER PRIMARY KEY,  -- append order, breaks ties of equal timestamps
    job_id TEXT NOT NULL,
    level  TEXT NOT NULL,
    ts     INTEGER NOT NULL,
    entry  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_job ON logs (job_id, ts, seq);

CREATE TABLE IF NOT EXISTS batches (
    batch_id   TEXT PRIMARY KEY,
    version    INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    record     TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS cache (
    cache_key  TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL,
    record     TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);

-- seq is the message id and its FIFO position; AUTOINCREMENT never reuses one.
CREATE TABLE IF NOT EXISTS queue (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id        TEXT NOT NULL,
    priority      INTEGER NOT NULL,
    visible_at    INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt       TEXT
);
CREATE INDEX IF NOT EXISTS queue_order ON queue (priority DESC, seq);
CREATE UNIQUE INDEX IF NOT EXISTS queue_receipt ON queue (receipt);
";

pub(super) fn connect(path: &Path) -> Result<Connection, Failure> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // More distinct statements than rusqlite's default 16 are in use; an evicted one would
    // be compiled again.
    conn.set_prepared_statement_cache_capacity(64);
    // Sub-journals (the undo copies of the writer's savepoints) and temporary sort tables
    // in memory: on disk, every grouped write spilled to a temporary file.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // synchronous = NORMAL with WAL: a commit is a write to the WAL without an fsync, and
    // only checkpoints fsync (on the checkpoint thread). A crash of the process (kill -9)
    // loses nothing committed, as the OS holds the writes; a power cut or OS crash may lose
    // the last commits before a checkpoint, but never corrupts the database. FULL would
    // fsync every commit, which the single writer would pay on every create.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

pub(super) fn migrate(conn: &Connection) -> Result<(), Failure> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(other(format!(
            "database schema {version} is newer than this vacal's ({SCHEMA_VERSION})"
        )));
    }
    let tx = conn.unchecked_transaction()?;
    if version == 1 {
        // Version 2 added the janitor's due instant; open jobs get theirs from the record.
        tx.execute_batch("ALTER TABLE jobs ADD COLUMN due_at INTEGER")?;
        let open = query_jobs(
            &tx,
            "SELECT record FROM jobs WHERE status IN ('pending', 'running')",
            &[],
        )?;
        for job in open {
            tx.execute(
                "UPDATE jobs SET due_at = ?2 WHERE job_id = ?1",
                params![job.job_id, job.janitor_due_at().map(nanos)],
            )?;
        }
    }
    tx.execute_batch(&format!("{SCHEMA} PRAGMA user_version = {SCHEMA_VERSION};"))?;
    tx.commit()?;
    Ok(())
}
