//! Sanity of the long-run multimodal reference in `tests/fixtures/multimodal` (made by
//! `examples/multimodal_reference.rs`; method in `src/reference_tools.rs`): it describes the
//! request it claims to, in the result's cause order, and is precise enough to judge a
//! default-size fit by.

use std::path::Path;

use serde_json::{json, Value};
use vacal_core::request::parse_request;
use vacal_engine::prepare::prepare;

fn fixture() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/multimodal/kenya_neonate_ensemble_no_pathcorr.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

#[test]
fn the_fixture_is_the_kenya_neonate_ensemble_without_path_correction() {
    let f = fixture();
    assert_eq!(
        f["request"],
        json!({
            "va_data": {"eava": "use_example", "insilicova": "use_example", "interva": "use_example"},
            "age_group": "neonate",
            "country": "Kenya",
            "path_correction": false,
            "rules": "2.2",
            "mcmc": {"seed": 1}
        })
    );
    assert!(f["command"]
        .as_str()
        .unwrap()
        .starts_with("cargo run -p vacal-engine --features reference-tools --example"));
}

#[test]
fn the_fixture_means_are_a_csmf_over_the_results_causes() {
    let f = fixture();
    let request = parse_request(&f["request"]).expect("valid request");
    let prepared = prepare(&request).expect("prepares");
    let causes: Vec<&str> = f["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(causes, prepared.causes);
    assert_eq!(
        causes,
        [
            "congenital_malformation",
            "pneumonia",
            "sepsis_meningitis_inf",
            "ipre",
            "other",
            "prematurity"
        ]
    );

    let mean = numbers(&f["mean"]);
    let mcse = numbers(&f["mcse"]);
    assert_eq!((mean.len(), mcse.len()), (causes.len(), causes.len()));
    assert!(mean.iter().all(|m| (0.0..=1.0).contains(m)), "{mean:?}");
    assert!((mean.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{mean:?}");
    // Well below what a 5,000-draw fit can reach: pneumonia's and sepsis's posterior sd is
    // about 0.3, so even 5,000 independent draws leave an error of about 0.004.
    assert!(mcse.iter().all(|s| (0.0..0.003).contains(s)), "{mcse:?}");

    // "other" is outside the ensemble's calibrated set: it keeps its pooled uncalibrated share.
    let other = causes.iter().position(|c| *c == "other").unwrap();
    let pooled = |j: usize| prepared.deaths.iter().map(|row| row[j]).sum::<f64>();
    let all: f64 = (0..causes.len()).map(pooled).sum();
    assert!((mean[other] - pooled(other) / all).abs() < 1e-12);
    assert!(mcse[other] < 1e-12);

    let weights: Vec<f64> = f["mode_weights"]
        .as_object()
        .expect("mode weights by name")
        .values()
        .map(|w| w.as_f64().unwrap())
        .collect();
    assert!((weights.iter().sum::<f64>() - 1.0).abs() < 1e-9);
}
