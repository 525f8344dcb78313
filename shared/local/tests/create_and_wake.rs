//! The SQLite store's own ways to a fast create: a create whose queue is another database
//! still works (step by step), and a send wakes a waiting worker.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use vacal_core::conformance::sample_job;
use vacal_core::domain::{LogEntry, LogLevel};
use vacal_core::ports::{JobQueue, JobStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_with_a_queue_in_another_database_goes_step_by_step() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (store, _) = vacal_local::open(a_dir.path()).unwrap();
    let (queue, _) = vacal_local::open(b_dir.path()).unwrap();
    let now = Utc::now();
    let job = sample_job("job_twodbs000001", now);
    let entry = LogEntry::new(now, LogLevel::Info, "api", "Job created with priority 5");
    store
        .insert_job_queued(&job, std::slice::from_ref(&entry), 1000, &queue)
        .await
        .unwrap();
    assert_eq!(
        store.get_job(&job.job_id, now).await.unwrap(),
        Some(job.clone())
    );
    assert_eq!(
        store.logs(&job.job_id, None, 0, 10).await.unwrap(),
        vec![entry]
    );
    let long = Duration::from_secs(30);
    assert!(store.receive(10, long).await.unwrap().is_empty());
    let got = queue.receive(10, long).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].job_id, job.job_id);
}

/// Without the wake-up the waiter would sleep its full minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_wakes_a_waiting_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = vacal_local::open(dir.path()).unwrap();
    let store = Arc::new(store);
    for how in ["send", "create"] {
        let waiter = {
            let store = store.clone();
            tokio::spawn(async move { store.wait(Duration::from_secs(60)).await })
        };
        if how == "send" {
            store
                .send("job_wake00000001", 5, Duration::ZERO)
                .await
                .unwrap();
        } else {
            let job = sample_job("job_wake00000002", Utc::now());
            store
                .insert_job_queued(&job, &[], 1000, store.as_ref())
                .await
                .unwrap();
        }
        tokio::time::timeout(Duration::from_secs(20), waiter)
            .await
            .unwrap_or_else(|_| panic!("a {how} must wake the waiting receiver"))
            .unwrap();
    }
}
