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
    // bimodal (pneumonia or sepsis takes most deaths); NUTS chains rarely cross between the
    // modes, so they disagree. The fit is rerun with parallel tempering, which weighs the
    // modes; its draws converge, so the warning says what happened and no R-hat warning is
    // left. R's single chain reports one mode and says nothing.
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
    let diagnostics = ensemble.diagnostics.as_ref().unwrap();
    assert_eq!(diagnostics.sampler, "tempering");
    assert_eq!(diagnostics.multimodal_causes, [1, 2]);
    assert!(diagnostics.max_rhat <= 1.01, "{diagnostics:?}");
    let warnings = calibration.warnings();
    assert_eq!(
        warnings,
        [
            "ensemble: the posterior has several modes in pneumonia and sepsis_meningitis_inf: \
             the usual sampler's chains each settled in one; parallel tempering was run to \
             weigh the modes, and its draws are reported: the intervals span both modes"
        ],
        "{diagnostics:?}"
    );
}
