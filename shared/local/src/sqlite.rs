//! `JobStore` and `JobQueue` on one SQLite database.
//!
//! rusqlite is synchronous, so no call runs on the async runtime. Writes go to one writer
//! thread that owns the only writing connection (SQLite has one writer at a time anyway) and
//! commits whatever writes are waiting in one transaction, each in its own savepoint: a
//! commit costs about as much for one insert as for fifty, because every insert dirties the
//! same few index pages. Reads run on tokio's blocking pool over a few more connections,
//! which WAL lets run beside the writer. Each record is stored whole as JSON, with the
//! columns that queries filter or sort on copied beside it. A background thread
//! checkpoints the WAL, so the fsyncs that a checkpoint needs are off the write path (the
//! writer never checkpoints by itself). A create (job, first logs, queue message) is one
//! write, and a send wakes this process's idle workers at once.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::types::Value as SqlValue;
use rusqlite::{
    params, params_from_iter, Connection, ErrorCode, OptionalExtension, TransactionBehavior,
};
use tokio::sync::{oneshot, Notify};
use vacal_core::domain::{Batch, CacheEntry, Job, JobStatus, LogEntry, LogLevel};
use vacal_core::ports::{
    insert_job_queued_in_steps, CacheCounter, CacheCounters, Clock, Delivery, InsertQueuedError,
    JobFilter, JobQueue, JobStore, StoreError, StoreResult, SystemClock, Write,
};

/// Bumped when the schema changes; a database from a newer version is refused, an older
/// one is migrated (see `migrate`).
const SCHEMA_VERSION: i64 = 2;
/// Reads beside the writer; the machine has few cores, more would only queue.
const READERS: usize = 4;
/// Most writes committed together; bounds how long the first of them waits.
const MAX_GROUP: usize = 256;
/// How often the background thread checkpoints the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
/// WAL pages (4 KiB each) after which the checkpoint thread pauses the writer to finish a
/// checkpoint and let the WAL restart from its beginning. Under steady writes a PASSIVE
/// checkpoint never quite catches up, so without this the WAL would grow without bound;
/// after a burst it catches up and the WAL restarts by itself, without a pause. The pause
/// lasts two fsyncs (measured 15-20 ms here), so it should be rare: 65,536 pages is
/// 256 MiB, about 3 s of writes at 4,000 creates/s.
const RESTART_CHECKPOINT_PAGES: i64 = 65_536;
/// How long the paused writer waits at most for readers still using the old WAL; a
/// restart that does not get them in time is simply tried again later.
const RESTART_READER_WAIT: Duration = Duration::from_millis(50);
/// How long a connection waits for another process's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

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

const JOB_COLUMNS: &str = "job_id, version, status, job_type, created_at, age_group, country, \
     batch_id, expires_at, record, due_at";
const NEWEST_FIRST: &str = "ORDER BY created_at DESC, job_id DESC";

/// Jobs, logs, batches, cache index, counters and the queue in one SQLite file. Cheap to
/// clone (all clones share the connections).
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// To the writer thread; `None` only while dropping.
    writes: Option<mpsc::Sender<Box<dyn PendingWrite>>>,
    writer: Option<JoinHandle<()>>,
    /// Dropping it stops the checkpointer.
    stop_checkpoints: Option<mpsc::Sender<()>>,
    checkpointer: Option<JoinHandle<()>>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    clock: Arc<dyn Clock>,
    /// Woken by every send that is receivable at once; idle workers wait on it.
    sends: Notify,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel stops the writer after the writes already sent; joining it
        // means the database is closed once the last clone is gone (a reopen follows).
        self.stop_checkpoints = None;
        if let Some(checkpointer) = self.checkpointer.take() {
            let _ = checkpointer.join();
        }
        self.writes = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`. Blocks briefly.
    pub fn open(path: &Path) -> StoreResult<Self> {
        Self::open_with_clock(path, Arc::new(SystemClock))
    }

    /// As [`SqliteStore::open`], with the clock that times queue visibility and delays.
    /// It must be a wall clock that survives restarts, as visibility times are stored.
    pub fn open_with_clock(path: &Path, clock: Arc<dyn Clock>) -> StoreResult<Self> {
        let opened = (|| -> Result<Self, Failure> {
            let writer = connect(path)?;
            // The writer touches every index; keep more of them in memory than the 2 MiB
            // default as the tables grow.
            writer.pragma_update(None, "cache_size", -32_768)?;
            // Never checkpoint on the writer thread: a checkpoint fsyncs the WAL and the
            // database, and every write waiting behind it would stall (this set the create
            // p99). The checkpoint thread does it instead.
            writer.pragma_update(None, "wal_autocheckpoint", 0)?;
            let mode: String = writer.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(other(format!("cannot enable WAL (journal_mode is {mode})")));
            }
            migrate(&writer)?;
            let readers = (0..READERS)
                .map(|_| {
                    let conn = connect(path)?;
                    conn.pragma_update(None, "query_only", true)?;
                    Ok(Mutex::new(conn))
                })
                .collect::<Result<Vec<_>, Failure>>()?;
            let checkpoints = connect(path)?;
            checkpoints.busy_timeout(RESTART_READER_WAIT)?;
            let gate = Arc::new(Mutex::new(()));
            let (stop_checkpoints, stopped) = mpsc::channel();
            let checkpoint_gate = gate.clone();
            let checkpointer = std::thread::Builder::new()
                .name("vacal-sqlite-checkpoint".into())
                .spawn(move || checkpoint_loop(checkpoints, &checkpoint_gate, stopped))
                .map_err(|e| other(format!("cannot start the checkpoint thread: {e}")))?;
            let (writes, queued) = mpsc::channel();
            let writer = std::thread::Builder::new()
                .name("vacal-sqlite-writer".into())
                .spawn(move || write_loop(writer, &gate, queued))
                .map_err(|e| other(format!("cannot start the writer thread: {e}")))?;
            Ok(SqliteStore {
                inner: Arc::new(Inner {
                    writes: Some(writes),
                    writer: Some(writer),
                    stop_checkpoints: Some(stop_checkpoints),
                    checkpointer: Some(checkpointer),
                    readers,
                    next_reader: AtomicUsize::new(0),
                    clock,
                    sends: Notify::new(),
                }),
            })
        })();
        opened.map_err(|Failure(e)| match e {
            StoreError::Unavailable(m) => {
                StoreError::Unavailable(format!("{}: {m}", path.display()))
            }
            StoreError::Other(m) => StoreError::Other(format!("{}: {m}", path.display())),
        })
    }

    /// Runs `f` on the writer thread, atomically (in a savepoint), and answers once its
    /// transaction is committed.
    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: FnOnce(&Connection) -> Result<T, Failure> + Send + 'static,
        T: Send + 'static,
    {
        let stopped = || StoreError::Other("the database writer has stopped".into());
        let (reply, answer) = oneshot::channel();
        let write = Box::new(QueuedWrite {
            f: Some(f),
            outcome: None,
            reply,
        });
        let writes = self.inner.writes.as_ref().ok_or_else(stopped)?;
        writes.send(write).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Runs `f` on a reader connection, off the async runtime.
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: FnOnce(&mut Connection) -> Result<T, Failure> + Send + 'static,
        T: Send + 'static,
    {
        let inner = self.inner.clone();
        run_blocking(move || f(&mut inner.reader())).await
    }

    fn now_micros(&self) -> i64 {
        self.inner.clock.now().timestamp_micros()
    }
}

impl Inner {
    /// A free reader if there is one, else wait for the next in turn.
    fn reader(&self) -> MutexGuard<'_, Connection> {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let n = self.readers.len();
        for i in 0..n {
            if let Ok(guard) = self.readers[(start + i) % n].try_lock() {
                return guard;
            }
        }
        lock(&self.readers[start % n])
    }
}

/// A write waiting for the writer thread.
trait PendingWrite: Send {
    /// Runs the write in the open transaction; false if it failed (it is then undone).
    fn apply(&mut self, conn: &Connection) -> bool;
    /// Answers the caller once the transaction has committed, or failed to.
    fn finish(self: Box<Self>, committed: Result<(), StoreError>);
}

struct QueuedWrite<T, F> {
    f: Option<F>,
    outcome: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> PendingWrite for QueuedWrite<T, F>
where
    F: FnOnce(&Connection) -> Result<T, Failure> + Send,
    T: Send,
{
    fn apply(&mut self, conn: &Connection) -> bool {
        let Some(f) = self.f.take() else {
            return false;
        };
        // A panicking write must not take the writer thread (and every later write) down.
        let outcome = match catch_unwind(AssertUnwindSafe(|| f(conn))) {
            Ok(result) => result.map_err(StoreError::from),
            Err(_) => Err(StoreError::Other("a database write panicked".into())),
        };
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        ok
    }

    fn finish(self: Box<Self>, committed: Result<(), StoreError>) {
        let this = *self;
        let answer = match (this.outcome, committed) {
            (Some(Err(e)), _) | (_, Err(e)) => Err(e),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (None, Ok(())) => Err(StoreError::Other("write not applied".into())),
        };
        // The caller may have given up waiting; the write stands either way.
        let _ = this.reply.send(answer);
    }
}

/// The writer thread: takes every write waiting (up to `MAX_GROUP`), applies each in its
/// own savepoint inside one transaction, commits, then answers them all.
/// `gate` is held for each transaction, so the checkpoint thread can pause writes between
/// two transactions.
fn write_loop(
    mut conn: Connection,
    gate: &Mutex<()>,
    queued: mpsc::Receiver<Box<dyn PendingWrite>>,
) {
    while let Ok(first) = queued.recv() {
        let mut group = vec![first];
        group.extend(queued.try_iter().take(MAX_GROUP - 1));
        let committed = {
            let _open = gate.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            commit_group(&mut conn, &mut group).map_err(StoreError::from)
        };
        for write in group {
            write.finish(committed.clone());
        }
    }
}

fn commit_group(conn: &mut Connection, group: &mut [Box<dyn PendingWrite>]) -> Result<(), Failure> {
    // IMMEDIATE takes the write lock up front, so reads inside a write (the queue's pick,
    // the cache's check) see what the write then changes, even with another process.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let [write] = group {
        // Alone, a write needs no savepoint (whose sub-journal copies every page it
        // touches): if it fails, dropping the transaction rolls it back.
        if write.apply(&tx) {
            tx.commit()?;
        }
        return Ok(());
    }
    // Cached statements: `Transaction::savepoint` would parse its SQL every time.
    for write in group.iter_mut() {
        tx.prepare_cached("SAVEPOINT one_write")?.execute([])?;
        if !write.apply(&tx) {
            // Undo the failed write only; the others stand.
            tx.prepare_cached("ROLLBACK TO one_write")?.execute([])?;
        }
        tx.prepare_cached("RELEASE one_write")?.execute([])?;
    }
    tx.commit()?;
    Ok(())
}

/// Copies committed WAL pages into the database file until `stop` closes. PASSIVE never
/// waits for (or blocks) the writer or readers, and does the bulk of the copying and the
/// fsyncs; the writer restarts the WAL from its beginning once everything in it has been
/// copied and no reader still uses it. Under steady writes that moment never comes, so once
/// the WAL is `RESTART_CHECKPOINT_PAGES` long the writer is paused at `gate` (between two
/// transactions) while a RESTART checkpoint copies the short tail the PASSIVE one left.
fn checkpoint_loop(conn: Connection, gate: &Mutex<()>, stop: mpsc::Receiver<()>) {
    let checkpoint = |mode: &str| -> rusqlite::Result<i64> {
        // (busy, WAL frames, frames copied); -1 frames when not in WAL mode.
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            r.get::<_, i64>(1)
        })
    };
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        let restart = match checkpoint("PASSIVE") {
            Ok(frames) => frames >= RESTART_CHECKPOINT_PAGES,
            Err(e) => {
                tracing::warn!(error = %e, "WAL checkpoint failed");
                false
            }
        };
        if restart {
            // The pause lasts as long as the RESTART's fsyncs, which grow with the frames
            // it still has to copy: two more PASSIVE passes first (each copies what came in
            // during the one before) shrink that tail, on this thread.
            for _ in 0..2 {
                if let Err(e) = checkpoint("PASSIVE") {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
            }
            let _paused = gate.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Err(e) = checkpoint("RESTART") {
                tracing::warn!(error = %e, "WAL restart checkpoint failed");
            }
        }
    }
}

/// A poisoned mutex only means a panic elsewhere; rusqlite rolls an unfinished transaction
/// back when it unwinds, so the connection is still usable.
fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn run_blocking<T, F>(f: F) -> StoreResult<T>
where
    F: FnOnce() -> Result<T, Failure> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(StoreError::from),
        Err(e) => Err(StoreError::Other(format!("database task failed: {e}"))),
    }
}

fn connect(path: &Path) -> Result<Connection, Failure> {
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

fn migrate(conn: &Connection) -> Result<(), Failure> {
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

/// A failure inside a blocking closure; lets `?` convert rusqlite and serde errors.
#[derive(Debug)]
struct Failure(StoreError);

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        // Lock contention and I/O trouble may pass; anything else is a bug or corruption.
        let transient = matches!(
            e.sqlite_error_code(),
            Some(
                ErrorCode::DatabaseBusy
                    | ErrorCode::DatabaseLocked
                    | ErrorCode::SystemIoFailure
                    | ErrorCode::DiskFull
                    | ErrorCode::CannotOpen
                    | ErrorCode::OutOfMemory
            )
        );
        Failure(if transient {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Other(e.to_string())
        })
    }
}

impl From<serde_json::Error> for Failure {
    fn from(e: serde_json::Error) -> Self {
        Failure(StoreError::Other(format!("bad stored record: {e}")))
    }
}

impl From<Failure> for StoreError {
    fn from(Failure(e): Failure) -> Self {
        e
    }
}

fn other(message: String) -> Failure {
    Failure(StoreError::Other(message))
}

/// A primary-key clash, as opposed to other constraint failures (which are bugs).
fn is_duplicate(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

/// Nanoseconds since the epoch, saturating outside chrono's nanosecond range.
fn nanos(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(if t.timestamp() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Counts, offsets and versions as SQLite integers (which are signed).
fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn parse<T: serde::de::DeserializeOwned>(record: &str) -> Result<T, Failure> {
    Ok(serde_json::from_str(record)?)
}

/// The values of `JOB_COLUMNS` for a job.
fn job_row(job: &Job) -> Result<[SqlValue; 11], Failure> {
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

fn insert_queue_row(
    conn: &Connection,
    job_id: &str,
    priority: u8,
    visible_at: i64,
) -> Result<(), Failure> {
    conn.prepare_cached("INSERT INTO queue (job_id, priority, visible_at) VALUES (?1, ?2, ?3)")?
        .execute(params![job_id, priority, visible_at])?;
    Ok(())
}

fn query_jobs(conn: &Connection, sql: &str, args: &[SqlValue]) -> Result<Vec<Job>, Failure> {
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

#[async_trait]
impl JobQueue for SqliteStore {
    async fn send(&self, job_id: &str, priority: u8, delay: Duration) -> StoreResult<()> {
        let job_id = job_id.to_string();
        let visible_at = self.now_micros().saturating_add(micros(delay));
        self.write(move |conn| insert_queue_row(conn, &job_id, priority, visible_at))
            .await?;
        if delay.is_zero() {
            self.inner.sends.notify_one();
        }
        Ok(())
    }

    async fn receive(&self, max: u32, visibility: Duration) -> StoreResult<Vec<Delivery>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let now = self.now_micros();
        let hidden_until = now.saturating_add(micros(visibility));
        self.write(move |conn| {
            // The pick and the hiding happen under one write lock (see `commit_group`),
            // so two receivers, even in two processes, never take the same message.
            let picked = conn
                .prepare_cached(
                    "SELECT seq, job_id, receive_count FROM queue WHERE visible_at <= ?1 \
                     ORDER BY priority DESC, seq ASC LIMIT ?2",
                )?
                .query_map(params![now, max], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, u32>(2)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let mut deliveries = Vec::with_capacity(picked.len());
            for (seq, job_id, count) in picked {
                let receive_count = count.saturating_add(1);
                // A fresh receipt per delivery: a stale one (from before a redelivery)
                // matches no row, so it can neither ack nor release the new delivery.
                let receipt = new_receipt(seq, receive_count);
                conn.prepare_cached(
                    "UPDATE queue SET visible_at = ?2, receive_count = ?3, receipt = ?4 WHERE seq = ?1",
                )?
                .execute(params![seq, hidden_until, receive_count, receipt])?;
                deliveries.push(Delivery {
                    job_id,
                    receipt,
                    receive_count,
                });
            }
            Ok(deliveries)
        })
        .await
    }

    async fn ack(&self, receipt: &str) -> StoreResult<()> {
        let receipt = receipt.to_string();
        self.write(move |conn| {
            // An unknown receipt (acked already, or superseded) is a no-op, as in SQS.
            conn.prepare_cached("DELETE FROM queue WHERE receipt = ?1")?
                .execute([receipt])?;
            Ok(())
        })
        .await
    }

    async fn release(&self, receipt: &str, delay: Duration) -> StoreResult<()> {
        let receipt = receipt.to_string();
        let visible_at = self.now_micros().saturating_add(micros(delay));
        self.write(move |conn| {
            conn.prepare_cached("UPDATE queue SET visible_at = ?2 WHERE receipt = ?1")?
                .execute(params![receipt, visible_at])?;
            Ok(())
        })
        .await?;
        if delay.is_zero() {
            self.inner.sends.notify_one();
        }
        Ok(())
    }

    async fn depth(&self) -> StoreResult<u64> {
        self.read(|conn| {
            let n: i64 = conn.query_row("SELECT COUNT(*) FROM queue", [], |r| r.get(0))?;
            Ok(n as u64)
        })
        .await
    }

    /// Wakes on a send of this store (any clone) that is receivable at once. `notify_one`
    /// keeps a wake-up for a worker that is between an empty `receive` and this wait, so
    /// none is lost; a spare one only costs an empty `receive`.
    async fn wait(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.inner.sends.notified()).await;
    }

    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
}

/// `<seq>.<receive_count>.<random>`: unique per delivery; the random part keeps a receipt
/// from a wiped and recreated database from matching a new message.
fn new_receipt(seq: i64, receive_count: u32) -> String {
    use rand::RngExt;
    let nonce: u64 = rand::rng().random();
    format!("{seq}.{receive_count}.{nonce:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hot queries are served by an index, in index order (no sort of all matches).
    #[test]
    fn hot_queries_use_their_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let conn = connect(&dir.path().join("plan.db")).unwrap();
        migrate(&conn).unwrap();
        let listing = |filter: &str| {
            format!("SELECT record FROM jobs WHERE expires_at > 1 {filter} {NEWEST_FIRST} LIMIT 20")
        };
        let queries = [
            listing(""),
            listing("AND status = 'pending'"),
            listing("AND job_type = 'calibration'"),
            listing("AND age_group = 'child'"),
            listing("AND country = 'kenya'"),
            listing("AND batch_id = 'b'"),
            "SELECT entry FROM logs WHERE job_id = 'a' AND (NULL IS NULL OR level = NULL) \
             ORDER BY ts DESC, seq DESC LIMIT 10"
                .to_string(),
            "DELETE FROM logs WHERE seq IN (SELECT seq FROM logs WHERE job_id = 'a' \
             ORDER BY ts DESC, seq DESC LIMIT -1 OFFSET 1000)"
                .to_string(),
            "SELECT seq FROM queue WHERE visible_at <= 5 ORDER BY priority DESC, seq LIMIT 10"
                .to_string(),
            "DELETE FROM queue WHERE receipt = 'x'".to_string(),
            "SELECT record FROM jobs WHERE due_at <= 5 AND expires_at > 5".to_string(),
        ];
        for sql in queries {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let plan = stmt
                .query_map([], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap()
                .join("; ");
            assert!(
                plan.contains("INDEX") && !plan.contains("TEMP B-TREE"),
                "{sql}: {plan}"
            );
        }
        let mut stmt = conn
            .prepare(
                "EXPLAIN QUERY PLAN SELECT record FROM jobs WHERE due_at <= 5 AND expires_at > 5",
            )
            .unwrap();
        let plan: String = stmt.query_row([], |r| r.get(3)).unwrap();
        assert!(plan.contains("jobs_due"), "the janitor's query: {plan}");
    }

    /// A version-1 database gains the due column, filled in for its open jobs.
    #[test]
    fn a_version_1_database_is_migrated() {
        use vacal_core::conformance::sample_job;
        let dir = tempfile::tempdir().unwrap();
        let conn = connect(&dir.path().join("v1.db")).unwrap();
        migrate(&conn).unwrap();
        // Back to version 1: no due column.
        conn.execute_batch(
            "DROP INDEX jobs_due; ALTER TABLE jobs DROP COLUMN due_at; PRAGMA user_version = 1;",
        )
        .unwrap();
        let now = Utc::now();
        let open = sample_job("job_migrate00001", now);
        let mut done = sample_job("job_migrate00002", now);
        done.status = JobStatus::Success;
        for job in [&open, &done] {
            let row = job_row(job).unwrap();
            conn.execute(
                "INSERT INTO jobs (job_id, version, status, job_type, created_at, age_group, \
                 country, batch_id, expires_at, record) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params_from_iter(row[..10].iter()),
            )
            .unwrap();
        }
        migrate(&conn).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let due = |id: &str| -> Option<i64> {
            conn.query_row("SELECT due_at FROM jobs WHERE job_id = ?1", [id], |r| {
                r.get(0)
            })
            .unwrap()
        };
        assert_eq!(due(&open.job_id), Some(nanos(open.timeout_at)));
        assert_eq!(due(&done.job_id), None);
    }
}
