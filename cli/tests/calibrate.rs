//! `vacal calibrate` as a user runs it: the real binary, files and standard input.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

fn vacal(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vacal"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vacal starts");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("vacal finishes")
}

fn json_of(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "vacal failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("stdout is JSON")
}

fn small_mcmc() -> Value {
    json!({"n_mcmc": 400, "n_burn": 400, "seed": 3})
}

#[test]
fn the_example_gives_the_documented_counts_and_a_coherent_result() {
    let result = json_of(&vacal(
        &["calibrate", "--example", "--algorithm", "eava,interva"],
        None,
    ));
    assert_eq!(result["status"], "success");
    assert_eq!(
        result["uncalibrated_deaths"]["eava"],
        json!([44, 168, 267, 268, 29, 164])
    );
    assert_eq!(
        result["uncalibrated_deaths"]["interva"],
        json!([42, 82, 267, 288, 16, 495])
    );
    assert_eq!(result["settings"]["ensemble"], true);
    for row in ["eava", "interva", "ensemble"] {
        let c = &result["calibrated"][row];
        let mean: Vec<f64> = serde_json::from_value(c["mean"].clone()).unwrap();
        let lower: Vec<f64> = serde_json::from_value(c["lower_ci"].clone()).unwrap();
        let upper: Vec<f64> = serde_json::from_value(c["upper_ci"].clone()).unwrap();
        assert!(
            (mean.iter().sum::<f64>() - 1.0).abs() < 1e-9,
            "{row} mean sums to 1"
        );
        for j in 0..6 {
            assert!(
                lower[j] <= mean[j] && mean[j] <= upper[j],
                "{row} cause {j}"
            );
        }
        // `other` is never calibrated by default: all three equal the uncalibrated share.
        assert_eq!(c["mean"][4], result["uncalibrated"][row][4]);
        assert_eq!(c["upper_ci"][4], result["uncalibrated"][row][4]);
        let percentages: Vec<i64> =
            serde_json::from_value(result["percentages"]["calibrated"][row].clone()).unwrap();
        assert_eq!(percentages.iter().sum::<i64>(), 100);
        assert!(result["diagnostics"][row]["max_rhat"].as_f64().unwrap() < 1.05);
    }
    let total: i64 =
        serde_json::from_value::<Vec<i64>>(result["calibrated_deaths"]["eava"].clone())
            .unwrap()
            .iter()
            .sum();
    assert_eq!(total, 940);
}

#[test]
fn a_request_from_standard_input_is_deterministic_for_a_seed() {
    let request = json!({
        "va_data": {"insilicova": {"congenital_malformation": 1, "pneumonia": 148,
            "sepsis_meningitis_inf": 363, "ipre": 327, "other": 62, "prematurity": 289}},
        "age_group": "neonate", "country": "kenya", "mcmc": small_mcmc(),
    })
    .to_string();
    let first = json_of(&vacal(&["calibrate", "--request", "-"], Some(&request)));
    let second = json_of(&vacal(&["calibrate", "--request", "-"], Some(&request)));
    assert_eq!(first["calibrated"], second["calibrated"]);
    assert_eq!(first["lambda"], second["lambda"]);
    // Country names match case-insensitively.
    assert_eq!(first["settings"]["matrix_country"], "Kenya");
}

#[test]
fn a_request_file_and_the_table_format_work() {
    let dir = std::env::temp_dir().join(format!("vacal-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("request.json");
    std::fs::write(
        &path,
        json!({"va_data": {"eava": "use_example"}, "age_group": "child",
               "country": "Mali", "mcmc": small_mcmc()})
        .to_string(),
    )
    .unwrap();
    let output = vacal(
        &[
            "calibrate",
            "--request",
            path.to_str().unwrap(),
            "--format",
            "table",
        ],
        None,
    );
    assert!(output.status.success());
    let table = String::from_utf8(output.stdout).unwrap();
    for cause in [
        "malaria",
        "severe_malnutrition",
        "nn_causes",
        "95% interval",
    ] {
        assert!(table.contains(cause), "table lacks {cause}:\n{table}");
    }
    assert!(
        table.contains("(kept)"),
        "the uncalibrated `other` is marked"
    );
    // 400 draws over 4 chains are too few for trustworthy summaries: the table says so last.
    let last = table.trim_end().lines().last().unwrap();
    assert!(
        last.starts_with("warning: eava: min bulk ESS ") && last.contains("below 400"),
        "{table}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn bad_requests_exit_2_with_a_message_naming_the_problem() {
    let cases = [
        ("{not json", "not valid JSON"),
        (
            r#"{"va_data": {"eava": [{"ID": 1, "cause": "Dragon bite"}]}, "age_group": "neonate", "country": "Mali"}"#,
            "Dragon bite",
        ),
        (
            r#"{"va_data": {"eava": "use_example"}, "age_group": "adult"}"#,
            "age_group",
        ),
        (r#"[1, 2]"#, "must be a JSON object"),
    ];
    for (body, expected) in cases {
        let output = vacal(&["calibrate", "--request", "-"], Some(body));
        assert_eq!(output.status.code(), Some(2), "exit code for {body}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "stderr for {body}: {stderr}");
        assert!(output.stdout.is_empty());
    }
    let missing = vacal(
        &["calibrate", "--request", "/nonexistent/request.json"],
        None,
    );
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn a_reader_that_closes_the_pipe_early_is_not_an_error() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vacal"))
        .args(["calibrate", "--example", "--algorithm", "eava"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vacal starts");
    // Like `vacal calibrate … | head -0`: the reader is gone before the result is written.
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("vacal finishes");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(output.status.success(), "{stderr}");
}
