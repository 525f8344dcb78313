//! Store and queue together: creating a job stores it, its first logs and its message as one.

use super::*;

pub(super) async fn insert_job_queued_stores_logs_and_queues(a: Adapters) {
    let now = base_now();
    let what = "insert_job_queued_stores_logs_and_queues";
    let mut job = sample_job("job_create000001", now);
    job.priority = 7;
    let logs = vec![
        LogEntry::new(now, LogLevel::Info, "api", "Job created with priority 7"),
        LogEntry::new(
            now + TimeDelta::microseconds(1),
            LogLevel::Warning,
            "api",
            "Ignored unknown request fields: dataset",
        ),
    ];
    a.jobs
        .insert_job_queued(&job, &logs, 1000, a.queue.as_ref())
        .await
        .expect("insert_job_queued");
    assert_eq!(
        a.jobs.get_job(&job.job_id, now).await.expect("get_job"),
        Some(job.clone()),
        "{what}: the job must be stored as given"
    );
    let newest_first: Vec<LogEntry> = logs.iter().rev().cloned().collect();
    assert_eq!(
        a.jobs.logs(&job.job_id, None, 0, 10).await.expect("logs"),
        newest_first,
        "{what}: the logs must be stored"
    );
    assert_eq!(
        receive_ids(&a.queue, 1, 10).await,
        vec![job.job_id.clone()],
        "{what}: the job's message must be queued"
    );

    // A clash of IDs stores nothing: no second message, no more logs, the job unchanged.
    let mut clash = job.clone();
    clash.priority = 2;
    let again = a
        .jobs
        .insert_job_queued(&clash, &logs[..1], 1000, a.queue.as_ref())
        .await;
    assert!(
        matches!(again, Err(InsertQueuedError::NotStored(_))),
        "{what}: a duplicate ID must fail with NotStored, got {again:?}"
    );
    assert_eq!(
        a.jobs.get_job(&job.job_id, now).await.expect("get_job"),
        Some(job.clone()),
        "{what}: a failed create must leave the existing job unchanged"
    );
    assert_eq!(
        a.jobs
            .logs(&job.job_id, None, 0, 10)
            .await
            .expect("logs")
            .len(),
        2,
        "{what}: a failed create must add no log entry"
    );
    assert!(
        receive_ids(&a.queue, 0, 10).await.is_empty(),
        "{what}: a failed create must queue no message"
    );

    // The first logs are trimmed like any others.
    let trimmed = sample_job("job_create000002", now);
    let many: Vec<LogEntry> = (0..3)
        .map(|i| {
            LogEntry::new(
                now + TimeDelta::microseconds(i),
                LogLevel::Info,
                "api",
                format!("line {i}"),
            )
        })
        .collect();
    a.jobs
        .insert_job_queued(&trimmed, &many, 2, a.queue.as_ref())
        .await
        .expect("insert_job_queued");
    let want: Vec<LogEntry> = many.iter().rev().take(2).cloned().collect();
    assert_eq!(
        a.jobs
            .logs(&trimmed.job_id, None, 0, 10)
            .await
            .expect("logs"),
        want,
        "{what}: at most max_log_entries, the newest kept"
    );
}

pub(super) async fn insert_job_queued_held_job_is_not_queued(a: Adapters) {
    let now = base_now();
    let what = "insert_job_queued_held_job_is_not_queued";
    let mut job = sample_job("job_create000003", now);
    job.batch_id = Some("batch_0123456789ab".into());
    job.job_type = JobType::BatchCalibration;
    job.queued = false;
    let logs = vec![LogEntry::new(
        now,
        LogLevel::Info,
        "batch_api",
        "Job created as part of batch batch_0123456789ab",
    )];
    a.jobs
        .insert_job_queued(&job, &logs, 1000, a.queue.as_ref())
        .await
        .expect("insert_job_queued");
    assert_eq!(
        a.jobs.get_job(&job.job_id, now).await.expect("get_job"),
        Some(job.clone()),
        "{what}: the job must be stored"
    );
    assert_eq!(
        a.jobs.logs(&job.job_id, None, 0, 10).await.expect("logs"),
        logs,
        "{what}: the log must be stored"
    );
    assert!(
        receive_ids(&a.queue, 0, 10).await.is_empty(),
        "{what}: a held job must not be queued"
    );
}
