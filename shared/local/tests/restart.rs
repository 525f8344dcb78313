//! Everything lives in the data directory: reopening it after a stop (or a crash) finds
//! jobs, logs, results and the queue, in-flight messages included.

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use vacal_core::conformance::sample_job;
use vacal_core::domain::{LogEntry, LogLevel};
use vacal_core::ports::{CacheCounter, CacheCounters, JobQueue, JobStore, ResultStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_data_dir_has_everything_including_in_flight_messages() {
    let dir = tempfile::tempdir().unwrap();
    let now = Utc::now();
    let job = sample_job("job_restart00001", now - TimeDelta::seconds(5));
    let entry = LogEntry::new(now, LogLevel::Info, "api", "Job created with priority 5");
    let key = "ab".repeat(32);
    let visibility = Duration::from_millis(1500);

    let received_at;
    {
        let (store, results) = vacal_local::open(dir.path()).unwrap();
        store.insert_job(&job).await.unwrap();
        store.append_log(&job.job_id, &entry, 1000).await.unwrap();
        store.count_cache(CacheCounter::Miss).await.unwrap();
        results
            .put_if_absent(&key, b"{\"result\": 1}")
            .await
            .unwrap();
        store
            .send("job_inflight0001", 9, Duration::ZERO)
            .await
            .unwrap();
        store
            .send("job_waiting00001", 1, Duration::ZERO)
            .await
            .unwrap();
        received_at = Instant::now();
        let got = store.receive(1, visibility).await.unwrap();
        assert_eq!(got[0].job_id, "job_inflight0001");
        // Dropped here without acking: as if the process stopped mid-job.
    }

    let (store, results) = vacal_local::open(dir.path()).unwrap();
    assert_eq!(
        store.get_job(&job.job_id, now).await.unwrap(),
        Some(job.clone())
    );
    assert_eq!(
        store.logs(&job.job_id, None, 0, 10).await.unwrap(),
        vec![entry]
    );
    assert_eq!(
        store.cache_counters().await.unwrap(),
        CacheCounters { hits: 0, misses: 1 }
    );
    assert_eq!(
        results.get(&key).await.unwrap(),
        Some(b"{\"result\": 1}".to_vec())
    );
    assert_eq!(
        store.depth().await.unwrap(),
        2,
        "queued and in-flight messages survive"
    );

    let waiting = store.receive(10, Duration::from_secs(30)).await.unwrap();
    if received_at.elapsed() < visibility {
        assert_eq!(
            waiting
                .iter()
                .map(|d| d.job_id.as_str())
                .collect::<Vec<_>>(),
            vec!["job_waiting00001"],
            "the in-flight message stays hidden until its timeout"
        );
    }
    tokio::time::sleep(
        visibility.saturating_sub(received_at.elapsed()) + Duration::from_millis(200),
    )
    .await;
    let again = store.receive(10, Duration::from_secs(30)).await.unwrap();
    let redelivered = again
        .iter()
        .find(|d| d.job_id == "job_inflight0001")
        .expect("the in-flight message is redelivered after its timeout");
    assert_eq!(redelivered.receive_count, 2);
}
