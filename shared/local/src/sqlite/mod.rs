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

mod queue;
mod schema;
mod store;
#[cfg(test)]
mod tests;
mod writer;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, ErrorCode};
use tokio::sync::Notify;
use vacal_core::ports::{Clock, StoreError, StoreResult, SystemClock};

use schema::{connect, migrate};
use writer::{checkpoint_loop, write_loop, PendingWrite};

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
