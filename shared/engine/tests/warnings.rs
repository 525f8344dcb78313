//! The calibration tells users when a fit should not be trusted.

use serde_json::{json, Value};
use vacal_core::request::parse_request;
use vacal_engine::{calibrate, Calibration, NoProgress};

fn run(body: Value) -> Calibration {
    let request = parse_request(&body).unwrap();
    calibrate(&request, &NoProgress).unwrap()
}

#[test]
fn a_default_calibration_has_no_warnings() {
    let calibration = run(json!({
        "va_data": {"eava": "use_example", "insilicova": "use_example", "interva": "use_example"},
        "age_group": "neonate",
        "country": "Mozambique"
    }));
    let diagnostics: Vec<_> = calibration.rows.iter().map(|r| &r.diagnostics).collect();
    assert_eq!(
        calibration.warnings(),
        Vec::<String>::new(),
        "{diagnostics:?}"
    );
}

#[test]
fn chains_stuck_in_different_modes_are_reported() {
    // Without path correction, the Kenyan neonatal matrices make the ensemble posterior
    // bimodal (pneumonia or sepsis takes most deaths); chains rarely cross between the modes,
    // so they disagree. R's single chain reports one mode and says nothing.
    let calibration = run(json!({
        "va_data": {"eava": "use_example", "insilicova": "use_example", "interva": "use_example"},
        "age_group": "neonate",
        "country": "Kenya",
        "path_correction": false,
        "mcmc": {"seed": 1}
    }));
    let ensemble = calibration
        .rows
        .iter()
        .find(|r| r.name == "ensemble")
        .expect("an ensemble row");
    let rhat = ensemble.diagnostics.as_ref().unwrap().max_rhat;
    assert!(rhat > 1.1, "{rhat}");
    let warnings = calibration.warnings();
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
