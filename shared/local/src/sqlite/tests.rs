use chrono::Utc;
use rusqlite::params_from_iter;
use vacal_core::domain::JobStatus;

use super::nanos;
use super::schema::{connect, migrate, SCHEMA_VERSION};
use super::store::{job_row, NEWEST_FIRST};

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
        .prepare("EXPLAIN QUERY PLAN SELECT record FROM jobs WHERE due_at <= 5 AND expires_at > 5")
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
