//! vacalibration 2.3.1's rules against 2.2's (calibration-model.md §13), and the stalled path
//! correction that 2.3.1's wider learn screen mostly prevents.

mod common;

use serde_json::{json, Value};
use vacal_core::request::parse_request;
use vacal_engine::data::COUNTRIES;
use vacal_engine::prepare::{counts_of, prepare};
use vacal_engine::request::Rules;
use vacal_engine::{AgeGroup, Calibration, PathCorrection};

fn calibration(body: Value) -> Calibration {
    common::result_of(&body)
}

/// Per cause: left out of the model (donotcalib or a screen), for a one-algorithm request.
fn left_out(body: Value) -> Vec<bool> {
    let request = parse_request(&body).expect("valid request");
    prepare(&request).expect("prepares").donotcalib_tomodel[0].clone()
}

#[test]
fn the_wider_learn_rule_leaves_out_shares_below_one_percent_or_above_99_percent() {
    let matrices = [
        ("prior", json!([[8, 1, 1], [1, 8, 1], [1, 1, 8]])),
        (
            "fixed",
            json!([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]]),
        ),
    ];
    // Deaths of causes a, b, c out of 10,000: cause a's share is 0.0099, 0.01, 0.99, 0.9901.
    let cases = [
        ([99.0, 5000.0, 4901.0], true),
        ([100.0, 5000.0, 4900.0], false),
        ([9900.0, 50.0, 50.0], false),
        ([9901.0, 50.0, 49.0], true),
    ];
    for (mmat_type, matrix) in &matrices {
        for (counts, wider_leaves_a_out) in cases {
            let body = |rules: &str, donotcalib_type: &str| {
                json!({
                    "va_data": {"x": {"a": counts[0], "b": counts[1], "c": counts[2]}},
                    "mmat_type": mmat_type,
                    "missmat": {"x": {"causes": ["a", "b", "c"], "matrix": matrix}},
                    "rules": rules, "donotcalib_type": donotcalib_type,
                })
            };
            let share = counts[0] / 10_000.0;
            assert_eq!(
                left_out(body("2.3.1", "learn"))[0],
                wider_leaves_a_out,
                "{mmat_type}, share {share}, 2.3.1"
            );
            assert!(
                !left_out(body("2.2", "learn"))[0],
                "{mmat_type}, share {share}: 2.2 keeps it"
            );
            assert!(
                !left_out(body("2.3.1", "fixed"))[0],
                "{mmat_type}, share {share}: donotcalib_type fixed has no screen"
            );
        }
    }
}

fn zero_pneumonia(rules: &str) -> Value {
    json!({
        "va_data": {"eava": [44, 0, 267, 268, 29, 164]},
        "age_group": "neonate", "country": "Mozambique", "rules": rules,
    })
}

#[test]
fn under_2_3_1_a_cause_without_deaths_is_not_calibrated_and_nothing_stalls() {
    let result = calibration(zero_pneumonia("2.3.1"));
    let pneumonia = result.causes.iter().position(|c| c == "pneumonia").unwrap();
    assert!(!result.rows[0].calibrated_causes[pneumonia]);
    let lambda = result.lambda[0].unwrap();
    assert!(lambda < 0.99, "λ = {lambda}");
    assert_eq!(
        result.path_correction[0],
        Some(PathCorrection {
            lambda,
            stalled: false
        })
    );
    assert_eq!(result.warnings(), Vec::<String>::new());
}

#[test]
fn under_2_2_the_same_request_stalls_and_says_what_to_do() {
    let result = calibration(zero_pneumonia("2.2"));
    assert_eq!(
        result.path_correction[0],
        Some(PathCorrection {
            lambda: 0.99,
            stalled: true
        })
    );
    let warnings = result.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let warning = &warnings[0];
    for said in [
        "eava: the path correction stalled: λ stayed at 0.99",
        "its 95% interval shows only sampling noise: it is too narrow",
        "fewer than 1% of the deaths: pneumonia (0 of 772 deaths)",
        r#""donotcalib": {"eava": ["pneumonia", "other"]}"#,
        r#"use "rules": "2.3.1""#,
    ] {
        assert!(warning.contains(said), "{said:?} not in {warning}");
    }
    // What the warning proposes removes the stall.
    let mut body = zero_pneumonia("2.2");
    body["donotcalib"] = json!({"eava": ["pneumonia", "other"]});
    let fixed = calibration(body);
    assert!(!fixed.path_correction[0].unwrap().stalled);
}

#[test]
fn an_ensemble_names_its_stalled_algorithms() {
    let result = calibration(json!({
        "va_data": {"eava": [44, 0, 267, 268, 29, 164], "insilicova": "use_example"},
        "age_group": "neonate", "country": "Mozambique", "rules": "2.2",
        "mcmc": {"n_mcmc": 400, "n_burn": 400},
    }));
    let stalled: Vec<bool> = result
        .path_correction
        .iter()
        .map(|pc| pc.unwrap().stalled)
        .collect();
    assert_eq!(stalled, [true, false]);
    let warnings = result.warnings();
    assert!(
        warnings.iter().any(|w| w
            .starts_with("ensemble: built on algorithm(s) whose path correction stalled: eava.")),
        "{warnings:?}"
    );
}

#[test]
fn without_path_correction_there_is_none_to_report() {
    let mut body = zero_pneumonia("2.2");
    body["path_correction"] = json!(false);
    body["mcmc"] = json!({"n_mcmc": 400, "n_burn": 400});
    let result = calibration(body);
    assert_eq!(result.lambda, [Some(0.0)]);
    assert_eq!(result.path_correction, [None]);
}

/// λ does not depend on the MCMC settings (it is chosen before sampling), so short runs
/// stand for the default ones.
#[test]
fn the_bundled_examples_do_not_stall_in_any_country() {
    for rules in ["2.3.1", "2.2"] {
        for age_group in ["neonate", "child"] {
            for country in COUNTRIES.iter().copied().chain(["Nigeria"]) {
                let result = calibration(json!({
                    "va_data": {"eava": "use_example", "insilicova": "use_example",
                                "interva": "use_example"},
                    "age_group": age_group, "country": country, "rules": rules,
                    "mcmc": {"n_mcmc": 200, "n_burn": 200},
                }));
                for (algorithm, pc) in result.algorithms.iter().zip(&result.path_correction) {
                    let at = format!("{rules} {age_group} {country} {algorithm}");
                    let pc = pc.unwrap_or_else(|| panic!("{at}"));
                    assert!(!pc.stalled, "{at}: {pc:?}");
                }
            }
        }
    }
}

#[test]
fn broad_cause_labels_count_like_the_matching_count_vector_under_2_3_1() {
    let neonate = AgeGroup::Neonate;
    let counts = [3.0, 0.0, 2.0, 1.0, 1.0, 1.0];
    let mut records = Vec::new();
    for (j, cause) in neonate.causes().iter().enumerate() {
        for i in 0..counts[j] as usize {
            // Case does not matter; Unspecified deaths are dropped as usual.
            let label = if i == 0 {
                cause.to_uppercase()
            } else {
                cause.clone()
            };
            records.push(json!({"ID": format!("{cause}-{i}"), "cause": label}));
        }
    }
    records.push(json!({"ID": "u", "cause": "Unspecified"}));
    let input = |rules: &str| {
        parse_request(&json!({
            "va_data": {"eava": records}, "age_group": "neonate", "rules": rules,
        }))
        .unwrap()
    };
    let request = input("2.3.1");
    let (causes, got) = counts_of(
        "eava",
        &request.va_data[0].1,
        request.age_group,
        Rules::V2_3_1,
    )
    .expect("broad labels map directly");
    assert_eq!(causes, neonate.causes());
    assert_eq!(got, counts);

    // 2.2's cause_map knows only specific labels (and a few broad ones that are also specific).
    let request = input("2.2");
    let err = counts_of(
        "eava",
        &request.va_data[0].1,
        request.age_group,
        Rules::V2_2,
    )
    .expect_err("2.2 does not know sepsis_meningitis_inf as a label");
    assert!(err.to_string().contains("'SEPSIS_MENINGITIS_INF'"), "{err}");
}

#[test]
fn the_child_table_knows_the_spelling_diarrhea_under_2_3_1() {
    // Mixed with specific labels, so the labels go through the lookup table.
    let records = json!([
        {"ID": 1, "cause": "Diarrhea"},
        {"ID": 2, "cause": "Malaria"},
        {"ID": 3, "cause": "road traffic accident"},
    ]);
    let body = |rules: &str| {
        parse_request(&json!({
            "va_data": {"eava": records}, "age_group": "child", "rules": rules,
        }))
        .unwrap()
    };
    let request = body("2.3.1");
    let (causes, counts) = counts_of(
        "eava",
        &request.va_data[0].1,
        request.age_group,
        Rules::V2_3_1,
    )
    .unwrap();
    let count_of = |cause: &str| counts[causes.iter().position(|c| c == cause).unwrap()];
    assert_eq!(
        (
            count_of("diarrhea"),
            count_of("malaria"),
            count_of("injury")
        ),
        (1.0, 1.0, 1.0)
    );
    let request = body("2.2");
    assert!(counts_of(
        "eava",
        &request.va_data[0].1,
        request.age_group,
        Rules::V2_2
    )
    .is_err());
}

#[test]
fn the_rules_are_read_and_refused_by_name() {
    let with = |rules: Option<&str>| {
        let mut body = json!({"va_data": {"eava": [1, 2, 3, 4, 5, 6]}, "age_group": "neonate"});
        if let Some(rules) = rules {
            body["rules"] = json!(rules);
        }
        parse_request(&body)
    };
    assert_eq!(with(None).unwrap().rules, Rules::V2_3_1);
    assert_eq!(with(Some("2.2")).unwrap().rules, Rules::V2_2);
    assert_eq!(
        with(Some("2.3")).unwrap_err().to_string(),
        r#"rules: must be "2.3.1" or "2.2" (vacalibration's release), got "2.3""#
    );
}
