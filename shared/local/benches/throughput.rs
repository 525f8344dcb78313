//! Create throughput on the SQLite store: `cargo bench -p vacal-local --bench throughput`.
//! It measures, it does not check.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use tokio::task::JoinSet;
use vacal_core::conformance::sample_job;
use vacal_core::domain::{LogEntry, LogLevel};
use vacal_core::ports::{JobQueue, JobStore};
use vacal_local::SqliteStore;

/// Concurrent callers (`THROUGHPUT_TASKS`, default 32), like requests in flight at a server.
fn tasks() -> usize {
    std::env::var("THROUGHPUT_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32)
}
const TOTAL: usize = 8000;

/// SplitMix64: distinct inputs give distinct, evenly spread outputs.
fn spread(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

async fn measure<F, Fut>(label: &'static str, phase: usize, store: &Arc<SqliteStore>, op: F)
where
    F: Fn(Arc<SqliteStore>, String) -> Fut + Send + Sync + Copy + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let started = Instant::now();
    let mut set = JoinSet::new();
    let tasks = tasks();
    for t in 0..tasks {
        let store = store.clone();
        set.spawn(async move {
            for i in 0..TOTAL / tasks {
                // Random-looking IDs, as `RandomIds` makes: index inserts land all over.
                let n = (phase * 1_000_000 + t * TOTAL + i) as u64;
                op(store.clone(), format!("job_{:012x}", spread(n) >> 16)).await;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    let n = TOTAL / tasks * tasks;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{label}: {n} in {secs:.2} s = {:.0}/s ({tasks} concurrent tasks)",
        n as f64 / secs
    );
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(create_throughput());
}

async fn create_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = vacal_local::open(dir.path()).unwrap();
    let store = Arc::new(store);
    measure("insert_job", 0, &store, |s, id| async move {
        s.insert_job(&sample_job(&id, Utc::now())).await.unwrap();
    })
    .await;
    measure("append_log", 1, &store, |s, id| async move {
        let entry = LogEntry::new(
            Utc::now(),
            LogLevel::Info,
            "api",
            "Job created with priority 5",
        );
        s.append_log(&id, &entry, 1000).await.unwrap();
    })
    .await;
    measure("send", 2, &store, |s, id| async move {
        s.send(&id, 5, Duration::ZERO).await.unwrap();
    })
    .await;
    measure("create", 3, &store, |s, id| async move {
        let now = Utc::now();
        s.insert_job(&sample_job(&id, now)).await.unwrap();
        let entry = LogEntry::new(now, LogLevel::Info, "api", "Job created with priority 5");
        s.append_log(&id, &entry, 1000).await.unwrap();
        s.send(&id, 5, Duration::ZERO).await.unwrap();
    })
    .await;
    let now = Utc::now();
    let started = Instant::now();
    let (page, total) = store
        .list_jobs(&Default::default(), 0, 20, now + TimeDelta::seconds(1))
        .await
        .unwrap();
    println!(
        "list_jobs first page of {total}: {} in {:?}",
        page.len(),
        started.elapsed()
    );
}
