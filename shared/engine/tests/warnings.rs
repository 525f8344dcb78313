//! The result tells users when a fit should not be trusted.

use serde_json::{json, Value};
use vacal_engine::{calibrate, result_json, CalibrationRequest, NoProgress};

fn run(body: Value) -> Value {
    let request = CalibrationRequest::from_json(&body).unwrap();
    let calibration = calibrate(&request, &NoProgress).unwrap();
    result_json(&request, &calibration)
}

fn warnings(result: &Value) -> Vec<&str> {
    result["warnings"]
        .as_array()
        .expect("warnings is an array")
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect()
}

#[test]
fn a_default_calibration_has_no_warnings() {
    let result = run(json!({
        "va_data": {"eava": "use_example", "insilicova": "use_example", "interva": "use_example"},
        "age_group": "neonate",
        "country": "Mozambique"
    }));
    assert_eq!(
        warnings(&result),
        Vec::<&str>::new(),
        "{}",
        result["diagnostics"]
    );
}

#[test]
fn chains_stuck_in_different_modes_are_reported() {
    // Without path correction, the Kenyan neonatal matrices make the ensemble posterior
    // bimodal (pneumonia or sepsis takes most deaths); chains rarely cross between the modes,
    // so they disagree. R's single chain reports one mode and says nothing.
    let result = run(json!({
        "va_data": {"eava": "use_example", "insilicova": "use_example", "interva": "use_example"},
        "age_group": "neonate",
        "country": "Kenya",
        "path_correction": false,
        "mcmc": {"seed": 1}
    }));
    let rhat = result["diagnostics"]["ensemble"]["max_rhat"]
        .as_f64()
        .unwrap();
    assert!(rhat > 1.1, "{rhat}");
    let warnings = warnings(&result);
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with(&format!("ensemble: max R-hat {rhat:.3} is above 1.01"))),
        "{warnings:?}"
    );
    // The single-algorithm fits of the same request mix well.
    assert!(
        warnings.iter().all(|w| w.starts_with("ensemble: ")),
        "{warnings:?}"
    );
}
