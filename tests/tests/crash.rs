//! Crash recovery: `kill -9` while jobs are pending and running, restart on the same data
//! directory, and every job still reaches a terminal state, computed once.

use std::time::Duration;

use serde_json::json;
use vacal_e2e::{Api, Server};

#[test]
fn jobs_survive_a_kill_9_and_complete_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    // A short lease so an interrupted job is taken over within seconds.
    let mut s = Server::start(dir.path(), 2, &[("JOB_LEASE_SECONDS", "5")]);
    let body = json!({
        "va_data": {"eava": [44, 168, 267, 268, 29, 164]},
        "mcmc": {"sampler": "gibbs", "n_mcmc": 2000, "n_burn": 0, "n_thin": 200},
    });
    let ids: Vec<String> = (0..6).map(|_| s.create(&body)).collect();
    std::thread::sleep(Duration::from_millis(400));
    let statuses: Vec<String> = ids
        .iter()
        .map(|id| {
            s.get(&format!("/api/v1/calibrate/{id}/status")).1["status"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(
        statuses.iter().any(|x| x == "running"),
        "some job runs at the crash: {statuses:?}"
    );
    assert!(
        statuses.iter().any(|x| x == "pending"),
        "some job waits at the crash: {statuses:?}"
    );

    s.restart();
    for id in &ids {
        let done = s.wait(id, Duration::from_secs(120));
        assert_eq!(done["status"], "success", "{id}: {done}");
        let completions = s.completions(id);
        assert_eq!(completions, 1, "{id} completed {completions} times");
        let (code, _) = s.get(&format!("/api/v1/calibrate/{id}/result"));
        assert_eq!(code, 200);
    }
}
