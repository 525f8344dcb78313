//! The `vacal` client against a `vacal serve` it starts: each command and each exit code.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Output, Stdio};

struct Served {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve() -> Served {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vacal"))
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("vacal serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("vacal listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    Served {
        child,
        url,
        _dir: dir,
    }
}

fn vacal(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vacal"))
        .args(args)
        .env("VACAL_URL", url)
        .env_remove("VACAL_API_KEY")
        .output()
        .expect("vacal runs")
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("an exit code")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn every_command_and_exit_code() {
    let served = serve();
    let url = served.url.as_str();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("eava.csv");
    std::fs::write(
        &file,
        "ID,cause\n1,Prematurity\n2,Neonatal sepsis\n3,birth asphyxia\n4,Neonatal sepsis\n",
    )
    .unwrap();
    let data = format!("eava={}", file.display());

    let validated = vacal(
        url,
        &["validate", "--data", &data, "--age-group", "neonate"],
    );
    assert_eq!(code(&validated), 0);
    assert!(
        stdout(&validated).contains("eava: long form, 4 deaths"),
        "{}",
        stdout(&validated)
    );

    let submitted = vacal(url, &["submit", "--data", &data, "--wait"]);
    assert_eq!(code(&submitted), 0, "{submitted:?}");
    assert!(
        stdout(&submitted).contains("rules: 2.3.1"),
        "the table: {}",
        stdout(&submitted)
    );

    let job = stdout(&vacal(url, &["submit", "--example", "eava"]))
        .trim()
        .to_string();
    assert!(job.starts_with("job_"), "{job}");
    assert_eq!(code(&vacal(url, &["wait", &job])), 0);
    let status = vacal(url, &["status", &job, "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["status"], "success");

    let csv = vacal(url, &["result", &job, "--format", "csv"]);
    assert_eq!(code(&csv), 0);
    assert!(stdout(&csv).starts_with("algorithm,cause,calibrated,"));
    let (plot, report) = (dir.path().join("plot.svg"), dir.path().join("report.html"));
    let saved = vacal(
        url,
        &[
            "result",
            &job,
            "--plot",
            plot.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&saved), 0);
    assert!(std::fs::read_to_string(&plot).unwrap().starts_with("<svg"));
    assert!(std::fs::read_to_string(&report)
        .unwrap()
        .contains("Calibrated CSMFs"));
    assert!(stdout(&vacal(url, &["jobs"])).contains(&job));

    // 2: a 4xx (unknown job; cancelling a finished one) or bad usage.
    assert_eq!(code(&vacal(url, &["status", "job_000000000000"])), 2);
    assert_eq!(code(&vacal(url, &["cancel", &job])), 2);
    assert_eq!(code(&vacal(url, &["submit", "--data", "eava"])), 2);
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "ID,cause\n1,Broken leg\n").unwrap();
    let refused = vacal(
        url,
        &["validate", "--data", &format!("eava={}", bad.display())],
    );
    assert_eq!(code(&refused), 2);
    assert!(stdout(&refused).contains("line 2: unknown cause 'Broken leg'"));

    // 3: wait gave up; 4: the job was cancelled.
    let request = dir.path().join("slow.json");
    std::fs::write(
        &request,
        r#"{"va_data": {"eava": [44, 168, 267, 268, 29, 164]},
            "mcmc": {"sampler": "gibbs", "n_mcmc": 4000, "n_burn": 0, "n_thin": 2000}}"#,
    )
    .unwrap();
    let slow = stdout(&vacal(
        url,
        &["submit", "--request", request.to_str().unwrap()],
    ))
    .trim()
    .to_string();
    assert_eq!(code(&vacal(url, &["wait", &slow, "--timeout", "0.2"])), 3);
    assert_eq!(code(&vacal(url, &["cancel", &slow])), 0);
    assert_eq!(code(&vacal(url, &["wait", &slow])), 4);

    // 5: nothing answers.
    assert_eq!(code(&vacal("http://127.0.0.1:9", &["status", &job])), 5);
}

/// Answers every request with `status` as JSON: a server whose job has failed.
fn stand_in(status: serde_json::Value) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let body = status.to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

#[test]
fn a_failed_job_exits_with_1() {
    let served = serve();
    let job = stdout(&vacal(&served.url, &["submit", "--example", "eava"]))
        .trim()
        .to_string();
    assert_eq!(code(&vacal(&served.url, &["wait", &job])), 0);
    // The status of a finished job, as the server words it, turned into a failure.
    let mut status: serde_json::Value =
        serde_json::from_slice(&vacal(&served.url, &["status", &job, "--json"]).stdout).unwrap();
    status["status"] = "failed".into();
    status["error_details"] = serde_json::json!({
        "error_type": "CalibrationError", "error_message": "sampler failed: boom", "traceback": null
    });
    let url = stand_in(status);
    let waited = vacal(&url, &["wait", &job]);
    assert_eq!(code(&waited), 1);
    assert!(String::from_utf8_lossy(&waited.stderr).contains("failed: sampler failed: boom"));
}
