//! `JobQueue`: messages in the `queue` table, received under the write lock.

use std::any::Any;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection};
use vacal_core::ports::{Delivery, JobQueue, StoreResult};

use super::{micros, Failure, SqliteStore};

pub(super) fn insert_queue_row(
    conn: &Connection,
    job_id: &str,
    priority: u8,
    visible_at: i64,
) -> Result<(), Failure> {
    conn.prepare_cached("INSERT INTO queue (job_id, priority, visible_at) VALUES (?1, ?2, ?3)")?
        .execute(params![job_id, priority, visible_at])?;
    Ok(())
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
