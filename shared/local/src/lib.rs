//! vacal-local: the ports of vacal-core for one machine. Jobs, logs, batches, the cache
//! index, counters and the queue live in one SQLite database (WAL), so a restart loses
//! nothing, in-flight messages included; results are files named by their key. Both pass
//! the same conformance suite as the AWS adapters.

mod files;
mod sqlite;

use std::path::Path;
use std::sync::Arc;

pub use files::FsResultStore;
pub use sqlite::SqliteStore;
use vacal_core::ports::{RandomIds, StoreError, StoreResult, SystemClock};
use vacal_core::Ports;

/// The database file inside a data directory.
pub const DATABASE_FILE: &str = "vacal.db";
/// The results folder inside a data directory.
pub const RESULTS_DIR: &str = "results";

/// Opens (creating if needed) a data directory: `vacal.db` and `results/`. Blocks briefly
/// (schema set-up), so call it at start-up, not on a request path.
pub fn open(data_dir: &Path) -> StoreResult<(SqliteStore, FsResultStore)> {
    std::fs::create_dir_all(data_dir).map_err(|e| {
        StoreError::Other(format!(
            "cannot create data directory {}: {e}",
            data_dir.display()
        ))
    })?;
    let store = SqliteStore::open(&data_dir.join(DATABASE_FILE))?;
    let results = FsResultStore::open(&data_dir.join(RESULTS_DIR))?;
    Ok((store, results))
}

/// The core's ports on a data directory ([`open`]): the SQLite store is also the queue; real
/// clock, random IDs.
pub fn ports(data_dir: &Path) -> StoreResult<Ports> {
    let (store, results) = open(data_dir)?;
    let store = Arc::new(store);
    Ok(Ports {
        store: store.clone(),
        queue: store,
        results: Arc::new(results),
        clock: Arc::new(SystemClock),
        ids: Arc::new(RandomIds),
    })
}
