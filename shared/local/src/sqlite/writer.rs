//! The writer thread, which commits waiting writes in groups, and the checkpoint thread,
//! which copies the WAL into the database file off the write path.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Mutex};

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::oneshot;
use vacal_core::ports::{StoreError, StoreResult};

use super::{Failure, SqliteStore, CHECKPOINT_EVERY, MAX_GROUP, RESTART_CHECKPOINT_PAGES};

impl SqliteStore {
    /// Runs `f` on the writer thread, atomically (in a savepoint), and answers once its
    /// transaction is committed.
    pub(super) async fn write<T, F>(&self, f: F) -> StoreResult<T>
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
}

/// A write waiting for the writer thread.
pub(super) trait PendingWrite: Send {
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
pub(super) fn write_loop(
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
pub(super) fn checkpoint_loop(conn: Connection, gate: &Mutex<()>, stop: mpsc::Receiver<()>) {
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
