//! SIGTERM stops `vacal serve` gracefully: the job in flight finishes (or is released) and
//! nothing is lost across the restart.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use vacal_e2e::{Api, Server};

#[test]
fn sigterm_lets_the_running_job_finish_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), 1, &[]);
    let body = json!({
        "va_data": {"eava": [44, 168, 267, 268, 29, 164]},
        "mcmc": {"sampler": "gibbs", "n_mcmc": 2000, "n_burn": 0, "n_thin": 200},
    });
    let running = s.create(&body);
    let waiting = s.create(&body);
    let started = Instant::now();
    while s.get(&format!("/api/v1/calibrate/{running}/status")).1["status"] != "running" {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "job never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = s.child.id().to_string();
    let term = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(term.success());
    let exit = loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "vacal did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "graceful exit: {exit:?}");

    s.restart();
    for id in [&running, &waiting] {
        let done = s.wait(id, Duration::from_secs(120));
        assert_eq!(done["status"], "success", "{id}: {done}");
    }
    assert_eq!(s.completions(&running), 1);
}
