//! Parity with the R package: every reference run of vacalibration 2.2 in
//! `tests/fixtures/reference`, checked with the tolerances of its README.

mod common;

use serde_json::Value;
use vacal_core::request::parse_request;
use vacal_engine::{calibrate, NoProgress};

const EXACT: f64 = 1e-12;

struct Check {
    case: String,
    failures: Vec<String>,
}

impl Check {
    fn close(&mut self, what: &str, got: f64, want: f64, tol: f64) {
        if !(got - want).abs().le(&tol) {
            self.failures
                .push(format!("{what}: got {got}, want {want} (±{tol})"));
        }
    }
    fn relative(&mut self, what: &str, got: f64, want: f64, tol: f64) {
        let within = (got - want).abs() <= tol * want.abs();
        if !within {
            self.failures
                .push(format!("{what}: got {got}, want {want} (relative ±{tol})"));
        }
    }
    fn equal<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, got: T, want: T) {
        if got != want {
            self.failures
                .push(format!("{what}: got {got:?}, want {want:?}"));
        }
    }
}

fn f(v: &Value) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("number expected, got {v}"))
}

fn check_run(case: &str, run: &Value) -> Vec<String> {
    let body = common::reference::request_for(run);
    let request = parse_request(&body).expect("reference request parses");
    let calibration = calibrate(&request, &NoProgress).expect("reference request calibrates");
    let out = &run["outputs"];
    let mut c = Check {
        case: case.to_string(),
        failures: Vec::new(),
    };
    let causes: Vec<String> = serde_json::from_value(out["causes"].clone()).unwrap();
    let algorithms: Vec<String> = serde_json::from_value(out["algorithms"].clone()).unwrap();
    c.equal("causes", &calibration.causes, &causes);
    c.equal("algorithms", &calibration.algorithms, &algorithms);
    c.equal(
        "ensemble",
        calibration.ensemble,
        out["ensemble"].as_bool().unwrap(),
    );
    c.close(
        "pshrink_strength",
        calibration.pshrink_strength,
        f(&out["pshrink_strength_used"]),
        0.0,
    );
    let samples_type = run["inputs"]["missmat_type"] == "samples";
    let fixed_type = run["inputs"]["missmat_type"] == "fixed";
    let path_correction = run["inputs"]["path_correction"].as_bool().unwrap();

    // Rows: the algorithms, then the ensemble when it ran.
    let row_names: Vec<String> = calibration.rows.iter().map(|r| r.name.clone()).collect();
    let want_rows: Vec<String> = out["calibrated"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    c.equal("rows", &row_names, &want_rows);
    c.equal(
        "calibrated_deaths_ensemble is null",
        calibration.deaths_calibrated_ensemble.is_none(),
        out["va_deaths_calib_ensemble"].is_null(),
    );

    for (k, algorithm) in algorithms.iter().enumerate() {
        let total: f64 = causes
            .iter()
            .map(|cause| f(&out["va_deaths_uncalib"][algorithm][cause]))
            .sum();
        for (j, cause) in causes.iter().enumerate() {
            let at = format!("{algorithm}/{cause}");
            c.close(
                &format!("va_deaths_uncalib {at}"),
                calibration.deaths_uncalibrated[k][j],
                f(&out["va_deaths_uncalib"][algorithm][cause]),
                0.0,
            );
            c.equal(
                &format!("donotcalib_study {at}"),
                calibration.donotcalib_study[k][j],
                out["donotcalib_study"][algorithm][cause].as_bool().unwrap(),
            );
        }
        // Matrices: exact (relative 1e-5 for samples, whose α come from an optimiser).
        let input = &calibration.mmat_input[k];
        for (i, row_cause) in input.causes.iter().enumerate() {
            for (j, col_cause) in input.causes.iter().enumerate() {
                let want = f(&out["Mmat_input"][algorithm][row_cause][col_cause]);
                let at = format!("Mmat_input {algorithm}[{row_cause}][{col_cause}]");
                if samples_type {
                    c.relative(&at, input.values[i][j], want, 1e-5)
                } else {
                    c.close(&at, input.values[i][j], want, EXACT * want.abs().max(1.0))
                }
            }
        }
        for (i, row_cause) in causes.iter().enumerate() {
            for (j, col_cause) in causes.iter().enumerate() {
                let want = f(&out["Mmat_study"][algorithm][row_cause][col_cause]);
                let at = format!("Mmat_study {algorithm}[{row_cause}][{col_cause}]");
                let got = calibration.mmat_study[k][i][j];
                if samples_type {
                    c.relative(&at, got, want, 1e-5)
                } else {
                    c.close(&at, got, want, EXACT * want.abs().max(1.0))
                }
            }
        }
        // λ and the matrix the model used.
        match out["lambda_calibpath"][algorithm].as_f64() {
            None => c.equal(
                &format!("lambda {algorithm} is NA"),
                calibration.lambda[k],
                None,
            ),
            Some(want) => {
                let got = calibration.lambda[k].unwrap_or(f64::NAN);
                let tol = if fixed_type || !path_correction {
                    0.0
                } else {
                    0.02 + 1e-12
                };
                c.close(&format!("lambda {algorithm}"), got, want, tol);
                for (i, row_cause) in causes.iter().enumerate() {
                    for (j, col_cause) in causes.iter().enumerate() {
                        let want = out["Mmat_tomodel"][algorithm][row_cause][col_cause].as_f64();
                        let got = calibration.mmat_tomodel[k][i][j];
                        let at = format!("Mmat_tomodel {algorithm}[{row_cause}][{col_cause}]");
                        match (want, got) {
                            (Some(w), Some(g)) if fixed_type || !path_correction => {
                                c.close(&at, g, w, EXACT * w.abs().max(1.0))
                            }
                            // Tiny α (CA CODE's ε-expanded entries) move far more but weigh nothing.
                            (Some(w), Some(g)) if w >= 0.05 => c.relative(&at, g, w, 0.15),
                            (Some(_), Some(_)) => {}
                            (w, g) => c.equal(&at, g.is_some(), w.is_some()),
                        }
                    }
                }
            }
        }
        // Calibrated deaths: within max(4, 2 %) per cause, totals exact.
        let deaths = &calibration.deaths_calibrated[k];
        c.close(
            &format!("calibrated deaths total {algorithm}"),
            deaths.iter().sum(),
            total,
            0.0,
        );
        for (j, cause) in causes.iter().enumerate() {
            let want = f(&out["va_deaths_calib_algo"][algorithm][cause]);
            c.close(
                &format!("va_deaths_calib_algo {algorithm}/{cause}"),
                deaths[j],
                want,
                f64::max(4.0, 0.02 * total),
            );
        }
        if let Some(ens) = &calibration.deaths_calibrated_ensemble {
            c.close(
                &format!("ensemble deaths total {algorithm}"),
                ens[k].iter().sum(),
                total,
                0.0,
            );
            for (j, cause) in causes.iter().enumerate() {
                let want = f(&out["va_deaths_calib_ensemble"][algorithm][cause]);
                c.close(
                    &format!("va_deaths_calib_ensemble {algorithm}/{cause}"),
                    ens[k][j],
                    want,
                    f64::max(4.0, 0.02 * total),
                );
            }
        }
    }

    for row in &calibration.rows {
        let name = &row.name;
        c.equal(
            &format!("calibrated {name}"),
            row.calibrated,
            out["calibrated"][name].as_bool().unwrap(),
        );
        for (j, cause) in causes.iter().enumerate() {
            let at = format!("{name}/{cause}");
            let pu = f(&out["p_uncalib"][name][cause]);
            c.close(&format!("p_uncalib {at}"), row.uncalibrated[j], pu, EXACT);
            c.close(
                &format!("puncalib_percentage {at}"),
                row.uncalibrated_percentage[j],
                f(&out["puncalib_percentage"][name][cause]),
                0.0,
            );
            c.equal(
                &format!("donotcalib_tomodel {at}"),
                !row.calibrated_causes[j],
                out["donotcalib_tomodel"][name][cause].as_bool().unwrap(),
            );
            let summ = &out["pcalib_postsumm"][name];
            if !row.calibrated_causes[j] || !row.calibrated {
                // Excluded causes keep the uncalibrated share exactly.
                for (what, got) in [
                    ("mean", row.mean[j]),
                    ("lower", row.lower_ci[j]),
                    ("upper", row.upper_ci[j]),
                ] {
                    c.close(&format!("excluded {what} {at}"), got, pu, EXACT);
                }
            }
            c.close(
                &format!("postmean {at}"),
                row.mean[j],
                f(&summ["postmean"][cause]),
                0.015,
            );
            c.close(
                &format!("lowcredI {at}"),
                row.lower_ci[j],
                f(&summ["lowcredI"][cause]),
                0.04,
            );
            c.close(
                &format!("upcredI {at}"),
                row.upper_ci[j],
                f(&summ["upcredI"][cause]),
                0.04,
            );
        }
        if row.calibrated {
            let d = row
                .diagnostics
                .as_ref()
                .expect("calibrated rows carry diagnostics");
            let converged = d.max_rhat < 1.05;
            if !converged {
                c.failures
                    .push(format!("{name}: max R-hat {} ≥ 1.05", d.max_rhat));
            }
        }
    }
    c.failures
        .into_iter()
        .map(|m| format!("{}: {m}", c.case))
        .collect()
}

#[test]
fn every_reference_run_matches_r_within_tolerance() {
    let runs = common::reference::reference_runs();
    assert!(
        runs.len() >= 20,
        "expected the 20 reference runs, found {}",
        runs.len()
    );
    let mut failures = Vec::new();
    for (name, run) in &runs {
        failures.extend(check_run(name, run));
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The deterministic parts alone (§2–§5, and §6.2 for fixed), to 1e-12.
#[test]
fn deterministic_preparation_matches_r_exactly() {
    use vacal_engine::prepare::prepare;
    let mut failures = Vec::new();
    for (name, run) in common::reference::reference_runs() {
        let request = parse_request(&common::reference::request_for(&run)).unwrap();
        let prepared = match prepare(&request) {
            Ok(p) => p,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let out = &run["outputs"];
        let causes: Vec<String> = serde_json::from_value(out["causes"].clone()).unwrap();
        if prepared.causes != causes {
            failures.push(format!("{name}: causes {:?}", prepared.causes));
            continue;
        }
        let samples_type = run["inputs"]["missmat_type"] == "samples";
        for (k, algorithm) in prepared.algorithms.iter().enumerate() {
            for (j, cause) in causes.iter().enumerate() {
                let want = f(&out["p_uncalib"][algorithm][cause]);
                if (prepared.p_uncalib[k][j] - want).abs() > EXACT {
                    failures.push(format!("{name}: p_uncalib {algorithm}/{cause}"));
                }
                let excluded = out["donotcalib_tomodel"][algorithm][cause]
                    .as_bool()
                    .unwrap();
                if prepared.donotcalib_tomodel[k][j] != excluded {
                    failures.push(format!("{name}: donotcalib_tomodel {algorithm}/{cause}"));
                }
                for (i, row) in causes.iter().enumerate() {
                    let want = f(&out["Mmat_study"][algorithm][row][cause]);
                    let got = prepared.mmat_study[k][i][j];
                    let tol = if samples_type {
                        1e-5 * want.abs()
                    } else {
                        EXACT * want.abs().max(1.0)
                    };
                    if (got - want).abs() > tol {
                        failures.push(format!(
                            "{name}: Mmat_study {algorithm}[{row}][{cause}] {got} vs {want}"
                        ));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
