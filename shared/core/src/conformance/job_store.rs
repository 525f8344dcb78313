//! The checks of [`JobStore`]: jobs, conditional writes, listing, logs, batches, cache index, counters.

use super::*;

pub(super) async fn job_round_trip(s: Arc<dyn JobStore>) {
    let now = base_now();
    let full = full_job("job_full00000001", now);
    let mut bare = sample_job("job_bare00000001", now - TimeDelta::seconds(1));
    bare.age_group = None;
    bare.country = None;
    s.insert_job(&full).await.expect("insert_job(full)");
    s.insert_job(&bare).await.expect("insert_job(bare)");
    let got = s.get_job(&full.job_id, now).await.expect("get_job(full)");
    assert_eq!(
        got.as_ref(),
        Some(&full),
        "job_round_trip: every field must come back as inserted"
    );
    let got = s.get_job(&bare.job_id, now).await.expect("get_job(bare)");
    assert_eq!(
        got.as_ref(),
        Some(&bare),
        "job_round_trip: a job with empty optional fields must come back as inserted"
    );
    assert_eq!(
        s.get_job("job_nonexistent0", now).await.expect("get_job"),
        None,
        "job_round_trip: an unknown job is None"
    );
}

pub(super) async fn duplicate_insert_fails(s: Arc<dyn JobStore>) {
    let now = base_now();
    let job = sample_job("job_dup000000001", now);
    s.insert_job(&job).await.expect("insert_job");
    let mut other = job.clone();
    other.priority = 1;
    other.status = JobStatus::Failed;
    match s.insert_job(&other).await {
        Err(StoreError::Other(_)) => {}
        res => panic!(
            "duplicate_insert_fails: a second insert of one ID must be Err(Other), got {res:?}"
        ),
    }
    assert_eq!(
        s.get_job(&job.job_id, now).await.expect("get_job"),
        Some(job),
        "duplicate_insert_fails: the failed insert must not change the stored job"
    );
}

pub(super) async fn expired_jobs_are_invisible(s: Arc<dyn JobStore>) {
    let now = base_now();
    let mut job = sample_job("job_exp000000001", now - TimeDelta::minutes(5));
    job.expires_at = now;
    s.insert_job(&job).await.expect("insert_job");
    let before = now - TimeDelta::microseconds(1);
    assert_eq!(
        s.get_job(&job.job_id, before).await.expect("get_job"),
        Some(job.clone()),
        "expired_jobs_are_invisible: live while now < expires_at"
    );
    for at in [now, now + TimeDelta::hours(1)] {
        assert_eq!(
            s.get_job(&job.job_id, at).await.expect("get_job"),
            None,
            "expired_jobs_are_invisible: get_job must not return a job with expires_at <= now ({at})"
        );
        let (jobs, total) = s
            .list_jobs(&JobFilter::default(), 0, 100, at)
            .await
            .expect("list_jobs");
        assert!(
            jobs.is_empty() && total == 0,
            "expired_jobs_are_invisible: list_jobs must skip expired jobs, got {:?} (total {total})",
            ids(&jobs)
        );
        let by_status = s
            .jobs_by_status(&[JobStatus::Pending], None, at)
            .await
            .expect("jobs_by_status");
        assert!(
            by_status.is_empty(),
            "expired_jobs_are_invisible: jobs_by_status must skip expired jobs, got {:?}",
            ids(&by_status)
        );
    }
}

pub(super) async fn conditional_update(s: Arc<dyn JobStore>) {
    let now = base_now();
    let job = sample_job("job_upd000000001", now - TimeDelta::minutes(1));
    s.insert_job(&job).await.expect("insert_job");

    let mut next = job.clone();
    next.version = job.version + 1;
    next.status = JobStatus::Running;
    next.started_at = Some(now);
    next.lease_until = Some(now + TimeDelta::minutes(5));
    next.attempts = 1;
    next.progress = JobProgress::new(1, "Initializing");
    assert_eq!(
        s.update_job(&next).await.expect("update_job"),
        Write::Done,
        "conditional_update: an update from the stored version must be Done"
    );
    assert_eq!(
        s.get_job(&job.job_id, now).await.expect("get_job"),
        Some(next.clone()),
        "conditional_update: the update must be visible"
    );
    // The indexed copy of the status must follow the record.
    let running = JobFilter {
        status: Some(JobStatus::Running),
        ..JobFilter::default()
    };
    let pending = JobFilter {
        status: Some(JobStatus::Pending),
        ..JobFilter::default()
    };
    let (jobs, _) = s.list_jobs(&running, 0, 10, now).await.expect("list_jobs");
    assert_eq!(
        ids(&jobs),
        vec![job.job_id.as_str()],
        "conditional_update: list by the new status must find the job"
    );
    let (jobs, total) = s.list_jobs(&pending, 0, 10, now).await.expect("list_jobs");
    assert!(
        jobs.is_empty() && total == 0,
        "conditional_update: list by the old status must not find the job"
    );

    // Stale: the same version again (stored is now 2, this expects 1).
    let mut stale = next.clone();
    stale.status = JobStatus::Cancelled;
    assert_eq!(
        s.update_job(&stale).await.expect("update_job"),
        Write::Lost,
        "conditional_update: an update from a stale version must be Lost"
    );
    // Ahead: skipping a version is as wrong as going back.
    let mut ahead = next.clone();
    ahead.version = next.version + 5;
    ahead.status = JobStatus::Failed;
    assert_eq!(
        s.update_job(&ahead).await.expect("update_job"),
        Write::Lost,
        "conditional_update: an update that skips versions must be Lost"
    );
    let mut zero = next.clone();
    zero.version = 0;
    assert_eq!(
        s.update_job(&zero).await.expect("update_job"),
        Write::Lost,
        "conditional_update: version 0 has no predecessor and must be Lost"
    );
    assert_eq!(
        s.get_job(&job.job_id, now).await.expect("get_job"),
        Some(next.clone()),
        "conditional_update: lost updates must leave the job unchanged"
    );
    let mut unknown = sample_job("job_unknown00001", now);
    unknown.version = 2;
    assert_eq!(
        s.update_job(&unknown).await.expect("update_job"),
        Write::Lost,
        "conditional_update: updating a job that does not exist must be Lost"
    );
    assert_eq!(
        s.get_job(&unknown.job_id, now).await.expect("get_job"),
        None,
        "conditional_update: a lost update must not create the job"
    );
}

pub(super) async fn concurrent_updates_one_wins(s: Arc<dyn JobStore>) {
    let now = base_now();
    let job = sample_job("job_race00000001", now - TimeDelta::minutes(1));
    s.insert_job(&job).await.expect("insert_job");

    let mut a = job.clone();
    a.version += 1;
    a.status = JobStatus::Running;
    let mut b = job.clone();
    b.version += 1;
    b.status = JobStatus::Cancelled;
    let (ra, rb) = tokio::join!(s.update_job(&a), s.update_job(&b));
    let (ra, rb) = (ra.expect("update_job(a)"), rb.expect("update_job(b)"));
    assert!(
        (ra == Write::Done) != (rb == Write::Done),
        "concurrent_updates_one_wins: exactly one of two updates from one version must win, got {ra:?} and {rb:?}"
    );
    let winner = if ra == Write::Done { &a } else { &b };
    assert_eq!(
        s.get_job(&job.job_id, now).await.expect("get_job").as_ref(),
        Some(winner),
        "concurrent_updates_one_wins: the stored job must be the winner's"
    );

    // Many racers on separate tasks (so a multi-threaded runtime runs them in parallel).
    let base = winner.clone();
    let mut set = JoinSet::new();
    for i in 0..8u32 {
        let s = s.clone();
        let mut racer = base.clone();
        racer.version += 1;
        racer.attempts = 100 + i;
        set.spawn(async move { (s.update_job(&racer).await, racer) });
    }
    let mut winners = Vec::new();
    while let Some(joined) = set.join_next().await {
        let (res, racer) = joined.expect("update task panicked");
        if res.expect("update_job") == Write::Done {
            winners.push(racer);
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "concurrent_updates_one_wins: exactly one of 8 racers must win, {} did",
        winners.len()
    );
    assert_eq!(
        s.get_job(&job.job_id, now).await.expect("get_job").as_ref(),
        winners.first(),
        "concurrent_updates_one_wins: the stored job must be the racer that won"
    );
}

pub(super) async fn delete_job_with_logs(s: Arc<dyn JobStore>) {
    let now = base_now();
    let job = sample_job("job_del000000001", now - TimeDelta::minutes(1));
    let keep = sample_job("job_keep00000001", now - TimeDelta::minutes(2));
    s.insert_job(&job).await.expect("insert_job");
    s.insert_job(&keep).await.expect("insert_job");
    for i in 0..3 {
        let at = now - TimeDelta::seconds(30) + TimeDelta::seconds(i);
        s.append_log(
            &job.job_id,
            &LogEntry::new(at, LogLevel::Info, "api", format!("m{i}")),
            100,
        )
        .await
        .expect("append_log");
        s.append_log(
            &keep.job_id,
            &LogEntry::new(at, LogLevel::Info, "api", format!("k{i}")),
            100,
        )
        .await
        .expect("append_log");
    }
    let gone = s.delete_job(&job.job_id).await.expect("delete_job");
    assert!(
        gone >= 1,
        "delete_job_with_logs: deleting an existing job must report at least 1 item, got {gone}"
    );
    assert_eq!(
        s.get_job(&job.job_id, now).await.expect("get_job"),
        None,
        "delete_job_with_logs: a deleted job must be gone"
    );
    let logs = s.logs(&job.job_id, None, 0, 100).await.expect("logs");
    assert!(
        logs.is_empty(),
        "delete_job_with_logs: the job's logs must go with it, {} remain",
        logs.len()
    );
    let (jobs, total) = s
        .list_jobs(&JobFilter::default(), 0, 100, now)
        .await
        .expect("list_jobs");
    assert_eq!(
        (ids(&jobs), total),
        (vec![keep.job_id.as_str()], 1),
        "delete_job_with_logs: a deleted job must not be listed"
    );
    assert_eq!(
        s.logs(&keep.job_id, None, 0, 100)
            .await
            .expect("logs")
            .len(),
        3,
        "delete_job_with_logs: other jobs' logs must stay"
    );
    let mut next = job.clone();
    next.version += 1;
    assert_eq!(
        s.update_job(&next).await.expect("update_job"),
        Write::Lost,
        "delete_job_with_logs: updating a deleted job must be Lost"
    );
    assert_eq!(
        s.get_job(&job.job_id, now).await.expect("get_job"),
        None,
        "delete_job_with_logs: a lost update must not resurrect a deleted job"
    );
    assert_eq!(
        s.delete_job(&job.job_id).await.expect("delete_job"),
        0,
        "delete_job_with_logs: deleting again must report 0"
    );
    assert_eq!(
        s.delete_job("job_nonexistent0").await.expect("delete_job"),
        0,
        "delete_job_with_logs: deleting an unknown job must report 0"
    );
}

/// The listing fixture: five live jobs (two created at the same instant) and two expired.
pub(super) fn listing_jobs(now: DateTime<Utc>) -> Vec<Job> {
    let at = |minutes: i64| now - TimeDelta::minutes(minutes) + TimeDelta::microseconds(250_000);
    let mut j01 = sample_job("job_list0000001", at(10));
    j01.country = Some("Mozambique".into());
    let mut j02 = sample_job("job_list0000002", at(9));
    j02.status = JobStatus::Running;
    j02.job_type = JobType::BatchCalibration;
    j02.age_group = Some("child".into());
    j02.country = Some("Kenya".into());
    j02.batch_id = Some("batch_b1".into());
    let mut j03 = sample_job("job_list0000003", at(9));
    j03.status = JobStatus::Success;
    j03.job_type = JobType::BatchCalibration;
    j03.country = Some("mozambique".into());
    j03.batch_id = Some("batch_b1".into());
    let mut j04 = sample_job("job_list0000004", at(5));
    j04.status = JobStatus::Failed;
    j04.age_group = Some("child".into());
    j04.country = None;
    let mut j05 = sample_job("job_list0000005", at(1));
    j05.country = Some("MOZAMBIQUE".into());
    // Expired a second ago, and expiring exactly now: neither is live at `now`.
    let mut j06 = sample_job("job_list0000006", at(8));
    j06.expires_at = now - TimeDelta::seconds(1);
    let mut j07 = sample_job("job_list0000007", at(7));
    j07.expires_at = now;
    vec![j01, j02, j03, j04, j05, j06, j07]
}

pub(super) async fn list_jobs_filters_order_paging(s: Arc<dyn JobStore>) {
    let now = base_now();
    let fixture = listing_jobs(now);
    for job in &fixture {
        s.insert_job(job).await.expect("insert_job");
    }
    let tie = fixture[1].created_at;
    let cases: Vec<(&str, JobFilter, Vec<&str>)> = vec![
        (
            "no filter: newest first, ties by job_id (descending, as one key)",
            JobFilter::default(),
            vec![
                "job_list0000005",
                "job_list0000004",
                "job_list0000003",
                "job_list0000002",
                "job_list0000001",
            ],
        ),
        (
            "status",
            JobFilter {
                status: Some(JobStatus::Pending),
                ..Default::default()
            },
            vec!["job_list0000005", "job_list0000001"],
        ),
        (
            "job_type",
            JobFilter {
                job_type: Some("batch_calibration".into()),
                ..Default::default()
            },
            vec!["job_list0000003", "job_list0000002"],
        ),
        (
            "unknown job_type",
            JobFilter {
                job_type: Some("nonsense".into()),
                ..Default::default()
            },
            vec![],
        ),
        (
            "age_group",
            JobFilter {
                age_group: Some("child".into()),
                ..Default::default()
            },
            vec!["job_list0000004", "job_list0000002"],
        ),
        (
            "country, case-insensitive",
            JobFilter {
                country: Some("mOzAmBiQuE".into()),
                ..Default::default()
            },
            vec!["job_list0000005", "job_list0000003", "job_list0000001"],
        ),
        (
            "created_after, inclusive",
            JobFilter {
                created_after: Some(tie),
                ..Default::default()
            },
            vec![
                "job_list0000005",
                "job_list0000004",
                "job_list0000003",
                "job_list0000002",
            ],
        ),
        (
            "created_before, inclusive",
            JobFilter {
                created_before: Some(tie),
                ..Default::default()
            },
            vec!["job_list0000003", "job_list0000002", "job_list0000001"],
        ),
        (
            "created_after = created_before",
            JobFilter {
                created_after: Some(tie),
                created_before: Some(tie),
                ..Default::default()
            },
            vec!["job_list0000003", "job_list0000002"],
        ),
        (
            "created_after > created_before",
            JobFilter {
                created_after: Some(tie + TimeDelta::microseconds(1)),
                created_before: Some(tie),
                ..Default::default()
            },
            vec![],
        ),
        (
            "batch_id",
            JobFilter {
                batch_id: Some("batch_b1".into()),
                ..Default::default()
            },
            vec!["job_list0000003", "job_list0000002"],
        ),
        (
            "filters combine with AND",
            JobFilter {
                status: Some(JobStatus::Pending),
                age_group: Some("neonate".into()),
                country: Some("mozambique".into()),
                ..Default::default()
            },
            vec!["job_list0000005", "job_list0000001"],
        ),
    ];
    for (name, filter, want) in cases {
        let (jobs, total) = s.list_jobs(&filter, 0, 100, now).await.expect("list_jobs");
        assert_eq!(
            ids(&jobs),
            want,
            "list_jobs_filters_order_paging: {name}: wrong jobs or order"
        );
        assert_eq!(
            total,
            want.len() as u64,
            "list_jobs_filters_order_paging: {name}: wrong total"
        );
    }
    let listed = s
        .list_jobs(&JobFilter::default(), 0, 1, now)
        .await
        .expect("list_jobs")
        .0;
    assert_eq!(
        listed.first(),
        Some(&fixture[4]),
        "list_jobs_filters_order_paging: listed jobs must be whole records"
    );

    let all = JobFilter::default();
    let pages: Vec<(u64, u64, Vec<&str>)> = vec![
        (0, 2, vec!["job_list0000005", "job_list0000004"]),
        (2, 2, vec!["job_list0000003", "job_list0000002"]),
        (4, 2, vec!["job_list0000001"]),
        (5, 2, vec![]),
        (40, 20, vec![]),
        (1, 0, vec![]),
    ];
    for (offset, limit, want) in pages {
        let (jobs, total) = s
            .list_jobs(&all, offset, limit, now)
            .await
            .expect("list_jobs");
        assert_eq!(
            (ids(&jobs), total),
            (want, 5),
            "list_jobs_filters_order_paging: page offset={offset} limit={limit}"
        );
    }
    // Filtered paging: the total counts all pages of the filter.
    let country = JobFilter {
        country: Some("Mozambique".into()),
        ..Default::default()
    };
    let (jobs, total) = s.list_jobs(&country, 1, 1, now).await.expect("list_jobs");
    assert_eq!(
        (ids(&jobs), total),
        (vec!["job_list0000003"], 3),
        "list_jobs_filters_order_paging: filtered page"
    );
    // An hour earlier the expired two were live: expiry is judged against `now`.
    let (_, total) = s
        .list_jobs(&all, 0, 100, now - TimeDelta::hours(1))
        .await
        .expect("list_jobs");
    assert_eq!(
        total, 7,
        "list_jobs_filters_order_paging: expiry must be judged against the `now` passed in"
    );
}

pub(super) async fn jobs_by_status(s: Arc<dyn JobStore>) {
    let now = base_now();
    let fixture = listing_jobs(now);
    for job in &fixture {
        s.insert_job(job).await.expect("insert_job");
    }
    let tie = fixture[1].created_at;
    // (name, statuses, since, expected job IDs sorted)
    type Case<'a> = (&'a str, Vec<JobStatus>, Option<DateTime<Utc>>, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (
            "pending or running, any age (expired excluded)",
            vec![JobStatus::Pending, JobStatus::Running],
            None,
            vec!["job_list0000001", "job_list0000002", "job_list0000005"],
        ),
        (
            "since is inclusive",
            vec![JobStatus::Pending, JobStatus::Running],
            Some(tie),
            vec!["job_list0000002", "job_list0000005"],
        ),
        (
            "terminal statuses",
            vec![JobStatus::Success, JobStatus::Failed, JobStatus::Timeout],
            None,
            vec!["job_list0000003", "job_list0000004"],
        ),
        ("no statuses", vec![], None, vec![]),
    ];
    for (name, statuses, since, want) in cases {
        let jobs = s
            .jobs_by_status(&statuses, since, now)
            .await
            .expect("jobs_by_status");
        let got = sorted(jobs.iter().map(|j| j.job_id.clone()).collect());
        assert_eq!(got, want, "jobs_by_status: {name}");
    }
}

pub(super) async fn jobs_due(s: Arc<dyn JobStore>) {
    let now = base_now();
    let created = now - TimeDelta::minutes(10);
    let job = |id: &str, edit: &dyn Fn(&mut Job)| {
        let mut j = sample_job(id, created);
        edit(&mut j);
        j
    };
    let overdue = |j: &mut Job| j.timeout_at = now - TimeDelta::minutes(1);
    let running = |j: &mut Job, lease: Option<DateTime<Utc>>| {
        j.status = JobStatus::Running;
        j.started_at = Some(created);
        j.lease_until = lease;
        j.attempts = 1;
    };
    // (job, due at `now`)
    let fixture = vec![
        (job("job_due_overdue01", &overdue), true),
        (job("job_due_waiting01", &|_| {}), false),
        (
            job("job_due_leaseok01", &|j| {
                running(j, Some(now + TimeDelta::minutes(5)))
            }),
            false,
        ),
        (
            job("job_due_leaseexp1", &|j| {
                running(j, Some(now - TimeDelta::seconds(1)))
            }),
            true,
        ),
        (job("job_due_nolease01", &|j| running(j, None)), true),
        (
            job("job_due_runlate01", &|j| {
                running(j, Some(now + TimeDelta::minutes(5)));
                overdue(j);
            }),
            true,
        ),
        (
            job("job_due_batchwait", &|j| {
                j.batch_id = Some("batch_0123456789ab".into());
                j.queued = false;
            }),
            true,
        ),
        (
            job("job_due_batchqued", &|j| {
                j.batch_id = Some("batch_0123456789ab".into());
            }),
            false,
        ),
        (
            job("job_due_finished1", &|j| {
                overdue(j);
                j.status = JobStatus::Success;
                j.completed_at = Some(now);
            }),
            false,
        ),
        (
            job("job_due_expired01", &|j| {
                overdue(j);
                j.expires_at = now;
            }),
            false,
        ),
    ];
    for (j, _) in &fixture {
        s.insert_job(j).await.expect("insert_job");
    }
    let check = |got: &[Job], want_due: &[&str], never: &[&str], what: &str| {
        let got: Vec<&str> = ids(got);
        for id in want_due {
            assert!(
                got.contains(id),
                "jobs_due: {what}: {id} is due; got {got:?}"
            );
        }
        for id in never {
            assert!(
                !got.contains(id),
                "jobs_due: {what}: {id} must not be returned; got {got:?}"
            );
        }
    };
    let due: Vec<&str> = fixture
        .iter()
        .filter(|(_, d)| *d)
        .map(|(j, _)| j.job_id.as_str())
        .collect();
    let got = s.jobs_due(now).await.expect("jobs_due");
    check(
        &got,
        &due,
        &["job_due_finished1", "job_due_expired01"],
        "fixture",
    );

    // The due instant follows updates: a lease that lapses makes a job due, an end
    // makes it never due again.
    let mut lapsed = fixture[2].0.clone();
    lapsed.lease_until = Some(now - TimeDelta::seconds(5));
    lapsed.version += 1;
    assert_eq!(
        s.update_job(&lapsed).await.expect("update_job"),
        Write::Done
    );
    let mut ended = fixture[0].0.clone();
    ended.status = JobStatus::Timeout;
    ended.completed_at = Some(now);
    ended.version += 1;
    assert_eq!(s.update_job(&ended).await.expect("update_job"), Write::Done);
    let got = s.jobs_due(now).await.expect("jobs_due");
    check(
        &got,
        &["job_due_leaseok01", "job_due_leaseexp1"],
        &[
            "job_due_overdue01",
            "job_due_finished1",
            "job_due_expired01",
        ],
        "after updates",
    );
}

pub(super) async fn logs_order_filter_paging(s: Arc<dyn JobStore>) {
    let now = base_now();
    let job = "job_logs00000001";
    let levels = [
        LogLevel::Info,
        LogLevel::Error,
        LogLevel::Info,
        LogLevel::Warning,
        LogLevel::Error,
        LogLevel::Info,
    ];
    let mut written = Vec::new();
    for (i, level) in levels.into_iter().enumerate() {
        let at = now - TimeDelta::seconds(60) + TimeDelta::microseconds(i as i64 * 1_000_001);
        let mut entry = LogEntry::new(at, level, "worker", format!("entry {i}"));
        if i % 2 == 0 {
            entry.component = None;
            entry.data = Some(json!({"step": i, "note": "ünïcode"}));
        }
        s.append_log(job, &entry, 1000).await.expect("append_log");
        written.push(entry);
    }
    s.append_log(
        "job_other0000001",
        &LogEntry::new(now, LogLevel::Error, "api", "other job"),
        1000,
    )
    .await
    .expect("append_log");

    let newest_first: Vec<LogEntry> = written.iter().rev().cloned().collect();
    assert_eq!(
        s.logs(job, None, 0, 100).await.expect("logs"),
        newest_first,
        "logs_order_filter_paging: all entries of the job, newest first, as written"
    );
    assert_eq!(
        s.logs(job, None, 1, 2).await.expect("logs"),
        newest_first[1..3].to_vec(),
        "logs_order_filter_paging: offset/limit page newest first"
    );
    let errors: Vec<LogEntry> = newest_first
        .iter()
        .filter(|e| e.level == LogLevel::Error)
        .cloned()
        .collect();
    assert_eq!(
        s.logs(job, Some(LogLevel::Error), 0, 100)
            .await
            .expect("logs"),
        errors,
        "logs_order_filter_paging: exact level match"
    );
    assert_eq!(
        s.logs(job, Some(LogLevel::Error), 1, 1)
            .await
            .expect("logs"),
        errors[1..2].to_vec(),
        "logs_order_filter_paging: the level filter applies before paging"
    );
    assert!(
        s.logs(job, Some(LogLevel::Critical), 0, 100)
            .await
            .expect("logs")
            .is_empty(),
        "logs_order_filter_paging: no entry of that level"
    );
    assert!(
        s.logs(job, None, 6, 10).await.expect("logs").is_empty(),
        "logs_order_filter_paging: a page past the end is empty"
    );
    assert!(
        s.logs("job_nologs000001", None, 0, 10)
            .await
            .expect("logs")
            .is_empty(),
        "logs_order_filter_paging: a job without logs has none"
    );
}

pub(super) async fn logs_trimmed_to_newest(s: Arc<dyn JobStore>) {
    let now = base_now();
    let job = "job_trim00000001";
    let mut written = Vec::new();
    for i in 0..7 {
        let at = now - TimeDelta::seconds(60) + TimeDelta::seconds(i);
        let entry = LogEntry::new(at, LogLevel::Info, "engine", format!("line {i}"));
        s.append_log(job, &entry, 3).await.expect("append_log");
        written.push(entry);
    }
    let want: Vec<LogEntry> = written.iter().rev().take(3).cloned().collect();
    assert_eq!(
        s.logs(job, None, 0, 100).await.expect("logs"),
        want,
        "logs_trimmed_to_newest: at most max_entries, the newest kept"
    );
}

pub(super) async fn batch_round_trip(s: Arc<dyn JobStore>) {
    let now = base_now();
    let batch = Batch {
        batch_id: "batch_0123456789ab".to_string(),
        batch_name: Some("Multi-country comparison".to_string()),
        job_ids: vec!["job_b00000000001".into(), "job_b00000000002".into()],
        created_at: now - TimeDelta::microseconds(1_234_567),
        parallel_limit: 3,
        fail_fast: true,
        running: vec!["job_b00000000002".into()],
        expires_at: now + TimeDelta::days(1),
        version: 1,
    };
    let bare = Batch {
        batch_id: "batch_bare0000001".to_string(),
        batch_name: None,
        job_ids: vec!["job_b00000000003".into()],
        parallel_limit: 1,
        fail_fast: false,
        running: vec![],
        expires_at: now,
        ..batch.clone()
    };
    s.insert_batch(&batch).await.expect("insert_batch");
    s.insert_batch(&bare).await.expect("insert_batch");
    assert_eq!(
        s.get_batch(&batch.batch_id, now).await.expect("get_batch"),
        Some(batch.clone()),
        "batch_round_trip: every field must come back"
    );
    assert_eq!(
        s.get_batch(&bare.batch_id, now - TimeDelta::seconds(1))
            .await
            .expect("get_batch"),
        Some(bare.clone()),
        "batch_round_trip: a live batch with empty optional fields must come back"
    );
    assert_eq!(
        s.get_batch(&bare.batch_id, now).await.expect("get_batch"),
        None,
        "batch_round_trip: a batch with expires_at <= now must not be returned"
    );
    assert_eq!(
        s.get_batch("batch_unknown0001", now)
            .await
            .expect("get_batch"),
        None,
        "batch_round_trip: an unknown batch is None"
    );
    let mut dup = batch.clone();
    dup.parallel_limit = 9;
    assert!(
        s.insert_batch(&dup).await.is_err(),
        "batch_round_trip: a second insert of one batch ID must fail"
    );
    assert_eq!(
        s.get_batch(&batch.batch_id, now).await.expect("get_batch"),
        Some(batch),
        "batch_round_trip: the failed insert must not change the stored batch"
    );
}

pub(super) async fn conditional_batch_update(s: Arc<dyn JobStore>) {
    let now = base_now();
    let batch = Batch {
        batch_id: "batch_upd00000001".to_string(),
        batch_name: None,
        job_ids: (1..=4).map(|i| format!("job_bu000000000{i}")).collect(),
        created_at: now - TimeDelta::seconds(10),
        parallel_limit: 2,
        fail_fast: false,
        running: vec![],
        expires_at: now + TimeDelta::days(1),
        version: 1,
    };
    s.insert_batch(&batch).await.expect("insert_batch");
    let mut next = batch.clone();
    next.version = 2;
    next.running = vec!["job_bu0000000001".into()];
    assert_eq!(
        s.update_batch(&next).await.expect("update_batch"),
        Write::Done,
        "conditional_batch_update: an update from the stored version must be Done"
    );
    assert_eq!(
        s.get_batch(&batch.batch_id, now).await.expect("get_batch"),
        Some(next.clone()),
        "conditional_batch_update: the update must be visible"
    );
    let mut stale = next.clone();
    stale.running = vec!["job_bu0000000003".into()];
    assert_eq!(
        s.update_batch(&stale).await.expect("update_batch"),
        Write::Lost,
        "conditional_batch_update: an update from a stale version must be Lost"
    );
    let mut zero = next.clone();
    zero.version = 0;
    assert_eq!(
        s.update_batch(&zero).await.expect("update_batch"),
        Write::Lost,
        "conditional_batch_update: version 0 has no predecessor and must be Lost"
    );
    let mut unknown = next.clone();
    unknown.batch_id = "batch_unknown0001".into();
    assert_eq!(
        s.update_batch(&unknown).await.expect("update_batch"),
        Write::Lost,
        "conditional_batch_update: updating a batch that does not exist must be Lost"
    );
    assert_eq!(
        s.get_batch(&unknown.batch_id, now)
            .await
            .expect("get_batch"),
        None,
        "conditional_batch_update: a lost update must not create the batch"
    );

    // Racing for the second slot: exactly one member gets it.
    let mut set = JoinSet::new();
    for member in ["job_bu0000000002", "job_bu0000000003", "job_bu0000000004"] {
        let s = s.clone();
        let mut racer = next.clone();
        racer.version += 1;
        racer.running.push(member.to_string());
        set.spawn(async move { (s.update_batch(&racer).await, racer) });
    }
    let mut winners = Vec::new();
    while let Some(joined) = set.join_next().await {
        let (res, racer) = joined.expect("update task panicked");
        if res.expect("update_batch") == Write::Done {
            winners.push(racer);
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "conditional_batch_update: exactly one of 3 racers must win, {} did",
        winners.len()
    );
    assert_eq!(
        s.get_batch(&batch.batch_id, now)
            .await
            .expect("get_batch")
            .as_ref(),
        winners.first(),
        "conditional_batch_update: the stored batch must be the winner's"
    );
}

pub(super) fn cache_entry(
    key: &str,
    source: &str,
    cached_at: DateTime<Utc>,
    ttl: TimeDelta,
) -> CacheEntry {
    CacheEntry {
        cache_key: key.to_string(),
        result_key: key.to_string(),
        size_bytes: 12_345,
        cached_at,
        source_job_id: source.to_string(),
        age_group: Some("neonate".to_string()),
        country: Some("Kenya".to_string()),
        expires_at: cached_at + ttl,
    }
}

pub(super) async fn cache_entries(s: Arc<dyn JobStore>) {
    let now = base_now();
    let hour = TimeDelta::hours(1);
    let k1 = "11".repeat(32);
    let k2 = "22".repeat(32);
    let e1 = cache_entry(&k1, "job_first0000001", now, hour);
    assert_eq!(
        s.put_cache_entry(&e1).await.expect("put_cache_entry"),
        Write::Done,
        "cache_entries: a new key must be stored"
    );
    assert_eq!(
        s.get_cache_entry(&k1, now).await.expect("get_cache_entry"),
        Some(e1.clone()),
        "cache_entries: get must return the entry as stored"
    );
    let rival = cache_entry(&k1, "job_second000001", now, hour);
    assert_eq!(
        s.put_cache_entry(&rival).await.expect("put_cache_entry"),
        Write::Lost,
        "cache_entries: a second put of a live key must be Lost"
    );
    assert_eq!(
        s.get_cache_entry(&k1, now).await.expect("get_cache_entry"),
        Some(e1.clone()),
        "cache_entries: the first entry of a live key must stay"
    );

    // An entry that expired an hour ago may be replaced.
    let mut old = cache_entry(&k2, "job_old000000001", now - hour * 2, hour);
    old.age_group = None;
    old.country = None;
    assert_eq!(
        s.put_cache_entry(&old).await.expect("put_cache_entry"),
        Write::Done,
        "cache_entries: a new key must be stored (even one already expired)"
    );
    assert_eq!(
        s.get_cache_entry(&k2, now).await.expect("get_cache_entry"),
        None,
        "cache_entries: get must not return an expired entry"
    );
    let fresh = cache_entry(&k2, "job_fresh0000001", now, hour);
    assert_eq!(
        s.put_cache_entry(&fresh).await.expect("put_cache_entry"),
        Write::Done,
        "cache_entries: a put over an expired entry must be Done"
    );
    assert_eq!(
        s.get_cache_entry(&k2, now).await.expect("get_cache_entry"),
        Some(fresh.clone()),
        "cache_entries: the replacement must be visible"
    );

    let live = |mut v: Vec<CacheEntry>| {
        v.sort_by(|a, b| a.cache_key.cmp(&b.cache_key));
        v
    };
    assert_eq!(
        live(s.cache_entries(now).await.expect("cache_entries")),
        vec![e1.clone(), fresh.clone()],
        "cache_entries: list all live entries"
    );
    assert_eq!(
        s.get_cache_entry(&k1, e1.expires_at)
            .await
            .expect("get_cache_entry"),
        None,
        "cache_entries: an entry is expired at expires_at"
    );
    assert!(
        s.cache_entries(now + hour * 2)
            .await
            .expect("cache_entries")
            .is_empty(),
        "cache_entries: the list must skip expired entries"
    );

    s.delete_cache_entry(&k1).await.expect("delete_cache_entry");
    assert_eq!(
        s.get_cache_entry(&k1, now).await.expect("get_cache_entry"),
        None,
        "cache_entries: a deleted entry must be gone"
    );
    assert_eq!(
        live(s.cache_entries(now).await.expect("cache_entries")),
        vec![fresh.clone()],
        "cache_entries: a deleted entry must not be listed"
    );
    s.delete_cache_entry(&k1)
        .await
        .expect("cache_entries: deleting a missing entry must succeed");
    assert_eq!(
        s.put_cache_entry(&rival).await.expect("put_cache_entry"),
        Write::Done,
        "cache_entries: after a delete the key is free again"
    );
}

pub(super) async fn counters_are_atomic(s: Arc<dyn JobStore>) {
    assert_eq!(
        s.cache_counters().await.expect("cache_counters"),
        CacheCounters::default(),
        "counters_are_atomic: a fresh store counts nothing"
    );
    let mut set = JoinSet::new();
    for i in 0..65 {
        let s = s.clone();
        let counter = if i < 40 {
            CacheCounter::Hit
        } else {
            CacheCounter::Miss
        };
        set.spawn(async move { s.count_cache(counter).await });
    }
    while let Some(joined) = set.join_next().await {
        joined.expect("count task panicked").expect("count_cache");
    }
    assert_eq!(
        s.cache_counters().await.expect("cache_counters"),
        CacheCounters {
            hits: 40,
            misses: 25
        },
        "counters_are_atomic: every concurrent increment must be counted"
    );
}
