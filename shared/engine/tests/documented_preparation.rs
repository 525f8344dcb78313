//! The deterministic preparation of calibration-model.md §2–§5 on inputs that no R reference run
//! covers: the child age group, the other input forms, studies with fewer causes, the screening
//! of every stored matrix, countries, and donotcalib given by CHAMPS cause. Expected values come
//! from the document (its worked counts) or from its rules applied here to the stored data.

mod common;

use common::{result_of, ByName};
use serde_json::{json, Value};
use vacal_core::request::parse_request;
use vacal_engine::data::{
    stored_matrix, AgeGroup, StoredKind, StoredMatrix, COUNTRIES, STORED_ALGORITHMS,
};
use vacal_engine::prepare::{prepare, Prepared};

const NEONATE: [&str; 6] = [
    "congenital_malformation",
    "pneumonia",
    "sepsis_meningitis_inf",
    "ipre",
    "other",
    "prematurity",
];
const CHILD: [&str; 9] = [
    "malaria",
    "pneumonia",
    "diarrhea",
    "severe_malnutrition",
    "hiv",
    "injury",
    "other",
    "other_infections",
    "nn_causes",
];

fn prepared(body: Value) -> Prepared {
    prepare(&parse_request(&body).expect("valid request")).expect("prepares")
}

/// Entry (row, col) of a stored matrix, by cause name.
fn stored_entry(stored: &StoredMatrix, row: &str, col: &str) -> f64 {
    let at = |c: &str| stored.row_causes.iter().position(|s| s == c).unwrap();
    stored.values[at(row)][at(col)]
}

fn age_group(name: &str) -> AgeGroup {
    AgeGroup::parse(name).expect("age group")
}

/// §2.2's worked numbers: the bundled COMSA output of every age group and algorithm.
#[test]
fn every_bundled_example_gives_the_documented_counts() {
    let documented: [(&str, &str, &[f64]); 6] = [
        ("neonate", "eava", &[44., 168., 267., 268., 29., 164.]),
        ("neonate", "insilicova", &[1., 148., 363., 327., 62., 289.]),
        ("neonate", "interva", &[42., 82., 267., 288., 16., 495.]),
        (
            "child",
            "eava",
            &[109., 615., 487., 87., 68., 103., 0., 840., 48.],
        ),
        (
            "child",
            "insilicova",
            &[446., 386., 724., 115., 79., 95., 185., 628., 140.],
        ),
        (
            "child",
            "interva",
            &[371., 245., 854., 80., 181., 84., 195., 755., 33.],
        ),
    ];
    for (group, algorithm, counts) in documented {
        let p = prepared(json!({
            "va_data": {algorithm: "use_example"}, "age_group": group, "country": "Mozambique",
        }));
        let causes: &[&str] = if group == "child" { &CHILD } else { &NEONATE };
        assert_eq!(p.causes, causes, "{group} {algorithm}");
        assert_eq!(p.deaths[0], counts, "{group} {algorithm}");
        let total: f64 = counts.iter().sum();
        for (share, count) in p.p_uncalib[0].iter().zip(counts) {
            assert_eq!(*share, count / total);
        }
    }
}

/// §2.2: `Unspecified` records are dropped before lower-casing, labels are matched in lower
/// case, and an ID is counted once for every distinct broad cause among its labels.
#[test]
fn cause_map_drops_unspecified_and_counts_each_broad_cause_of_an_id_once() {
    let records = json!([
        {"ID": 1, "cause": "Neonatal pneumonia"},
        {"ID": 2, "cause": "Unspecified"},
        {"ID": 3, "cause": "Birth asphyxia"},
        {"ID": 3, "cause": "Neonatal sepsis"},
        {"ID": 4, "cause": "Pneumonia"},
        {"ID": 4, "cause": "NEONATAL PNEUMONIA"},
        {"ID": 5, "cause": "Congenital malformation"},
    ]);
    // openVA's column name gives the same result.
    let openva: Vec<Value> = records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| json!({"ID": r["ID"], "cause1": r["cause"]}))
        .collect();
    for data in [records, Value::Array(openva)] {
        let p = prepared(json!({
            "va_data": {"eava": data}, "age_group": "neonate", "country": "Mozambique",
        }));
        // congenital, pneumonia (IDs 1 and 4), sepsis (3), ipre (3), other, prematurity.
        assert_eq!(p.deaths[0], [1., 2., 1., 1., 0., 0.]);
    }
}

/// §2.1: an indicator matrix counts its columns; count vectors in the age group's order or by
/// name give the same counts; a later algorithm's causes follow the first algorithm's order.
#[test]
fn indicator_matrices_and_count_vectors_agree_and_follow_the_first_algorithms_order() {
    let rows = json!([
        [0, 1, 0, 0, 0, 0],
        [0, 0, 0, 1, 0, 0],
        [0, 1, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 1]
    ]);
    let by_order = json!([0, 2, 0, 1, 0, 1]);
    let by_name = json!({"prematurity": 1, "ipre": 1, "pneumonia": 2,
        "congenital_malformation": 0, "other": 0, "sepsis_meningitis_inf": 0});
    for (form, data) in [
        ("indicator rows", rows.clone()),
        (
            "indicator with causes",
            json!({"causes": NEONATE, "rows": rows}),
        ),
        ("counts", by_order),
    ] {
        let p = prepared(json!({
            "va_data": {"eava": data}, "age_group": "neonate", "country": "Mozambique",
        }));
        assert_eq!(p.causes, NEONATE, "{form}");
        assert_eq!(p.deaths[0], [0., 2., 0., 1., 0., 1.], "{form}");
    }
    let p = prepared(json!({
        "va_data": {"eava": by_name, "interva": "use_example"},
        "age_group": "neonate", "country": "Mozambique",
    }));
    let first_order = [
        "prematurity",
        "ipre",
        "pneumonia",
        "congenital_malformation",
        "other",
        "sepsis_meningitis_inf",
    ];
    assert_eq!(p.causes, first_order);
    assert_eq!(p.deaths[0], [1., 1., 2., 0., 0., 0.]);
    // interva's example (42, 82, 267, 288, 16, 495) in eava's order.
    assert_eq!(p.deaths[1], [495., 288., 82., 42., 16., 267.]);
    // The matrices follow the same order.
    let stored = stored_matrix(
        AgeGroup::Neonate,
        "interva",
        "Mozambique",
        StoredKind::Dirichlet,
    )
    .unwrap();
    for (i, row) in first_order.iter().enumerate() {
        for (j, col) in first_order.iter().enumerate() {
            assert_eq!(p.mmat_study[1][i][j], stored_entry(stored, row, col));
        }
    }
}

/// §3.3: a study reporting a subset of the stored causes works on that block; `prior` keeps the
/// cut Dirichlet parameters and `fixed` renormalises each cut row.
#[test]
fn a_study_with_fewer_causes_works_on_the_cut_matrix() {
    let study = ["pneumonia", "sepsis_meningitis_inf", "ipre", "prematurity"];
    let counts =
        json!({"pneumonia": 10, "sepsis_meningitis_inf": 20, "ipre": 30, "prematurity": 40});
    for (mmat_type, kind) in [
        ("prior", StoredKind::Dirichlet),
        ("fixed", StoredKind::PosteriorMean),
    ] {
        let p = prepared(json!({
            "va_data": {"eava": counts}, "age_group": "neonate", "country": "Kenya",
            "mmat_type": mmat_type,
        }));
        assert_eq!(p.causes, study);
        let stored = stored_matrix(AgeGroup::Neonate, "eava", "Kenya", kind).unwrap();
        for (i, row) in study.iter().enumerate() {
            let cut: Vec<f64> = study
                .iter()
                .map(|col| stored_entry(stored, row, col))
                .collect();
            let sum: f64 = cut.iter().sum();
            for (j, want) in cut.iter().enumerate() {
                let want = if mmat_type == "fixed" {
                    want / sum
                } else {
                    *want
                };
                let got = p.mmat_study[0][i][j];
                assert!(
                    (got - want).abs() <= 1e-15 * want.max(1.0),
                    "{mmat_type} [{row}][{j}]: {got} vs {want}"
                );
            }
        }
    }
}

/// §5.3 on every stored matrix: `other` (the default donotcalib) plus every VA cause whose
/// column of the row-normalised matrix varies by at most 0.1 over the rows is excluded; with
/// `donotcalib_type = "fixed"` and no causes listed, nothing is.
#[test]
fn screening_follows_the_column_range_rule_on_every_stored_matrix() {
    for group in ["neonate", "child"] {
        let causes: &[&str] = if group == "child" { &CHILD } else { &NEONATE };
        for algorithm in STORED_ALGORITHMS {
            for country in COUNTRIES.into_iter().chain(["other"]) {
                for (mmat_type, kind) in [
                    ("prior", StoredKind::Dirichlet),
                    ("fixed", StoredKind::PosteriorMean),
                ] {
                    let stored = stored_matrix(age_group(group), algorithm, country, kind).unwrap();
                    assert_eq!(stored.col_causes, causes);
                    let means: Vec<Vec<f64>> = stored
                        .values
                        .iter()
                        .map(|row| {
                            let sum: f64 = row.iter().sum();
                            row.iter().map(|x| x / sum).collect()
                        })
                        .collect();
                    let want: Vec<bool> = (0..causes.len())
                        .map(|j| {
                            let column = means.iter().map(|row| row[j]);
                            let range = column.clone().fold(f64::MIN, f64::max)
                                - column.fold(f64::MAX, f64::min);
                            causes[j] == "other" || range <= 0.1
                        })
                        .collect();
                    let p = prepared(json!({
                        "va_data": {algorithm: "use_example"}, "age_group": group,
                        "country": country, "mmat_type": mmat_type,
                    }));
                    assert_eq!(
                        p.donotcalib_tomodel[0], want,
                        "{group} {algorithm} {country} {mmat_type}"
                    );
                    let p = prepared(json!({
                        "va_data": {algorithm: "use_example"}, "age_group": group,
                        "country": country, "mmat_type": mmat_type,
                        "donotcalib": {algorithm: null}, "donotcalib_type": "fixed",
                    }));
                    assert!(
                        p.donotcalib_tomodel[0].iter().all(|x| !x),
                        "{group} {algorithm} {country}"
                    );
                }
            }
        }
    }
}

/// §3.1: a country without its own estimates uses `other`; vacal matches the seven names
/// regardless of case (api-reference §3.3).
#[test]
fn countries_resolve_to_their_matrix_or_other() {
    for (country, resolved) in [
        ("Nigeria", "other"),
        ("mozambique", "Mozambique"),
        ("SIERRA LEONE", "Sierra Leone"),
    ] {
        let p = prepared(json!({
            "va_data": {"insilicova": "use_example"}, "age_group": "child", "country": country,
        }));
        let stored = stored_matrix(
            AgeGroup::Child,
            "insilicova",
            resolved,
            StoredKind::Dirichlet,
        )
        .unwrap();
        assert_eq!(p.mmat_study[0], stored.values, "{country}");
    }
}

/// §4: donotcalib may name CHAMPS causes of the studycause_map; it then excludes every study
/// cause mapped to them. §5.2: the expanded matrix keeps each row's concentration.
#[test]
fn donotcalib_by_champs_cause_excludes_the_study_causes_mapped_to_it() {
    let p = prepared(json!({
        "va_data": {"eava": {"Pneu": 30, "Sepsis": 40, "Asphyxia": 50, "Preterm": 60,
                              "Other": 10, "Injury": 5}},
        "age_group": "neonate", "country": "Mali",
        "studycause_map": {"Pneu": "pneumonia", "Sepsis": "sepsis_meningitis_inf",
                           "Asphyxia": "ipre", "Preterm": "prematurity", "Other": "other",
                           "Injury": "other"},
        "donotcalib": {"eava": ["other"]}, "donotcalib_type": "fixed",
    }));
    assert_eq!(
        p.donotcalib_study[0],
        [false, false, false, false, true, true]
    );
    assert_eq!(
        p.donotcalib_tomodel[0],
        [false, false, false, false, true, true]
    );
    let stored = stored_matrix(AgeGroup::Neonate, "eava", "Mali", StoredKind::Dirichlet).unwrap();
    let champs = [
        "pneumonia",
        "sepsis_meningitis_inf",
        "ipre",
        "prematurity",
        "other",
        "other",
    ];
    let used = [
        "pneumonia",
        "sepsis_meningitis_inf",
        "ipre",
        "prematurity",
        "other",
    ];
    for (s, row) in champs.iter().enumerate() {
        let concentration: f64 = used.iter().map(|col| stored_entry(stored, row, col)).sum();
        let got: f64 = p.mmat_study[0][s].iter().sum();
        assert!(
            (got - concentration).abs() < 1e-12 * concentration,
            "row {s}: {got} vs {concentration}"
        );
    }
}

/// §5.3: an algorithm left with fewer than two calibrated causes is not calibrated: it reports
/// its observed CSMF and deaths, no λ and no diagnostics, and no sampler runs.
#[test]
fn an_algorithm_with_one_calibrated_cause_keeps_its_observed_csmf() {
    let body = json!({
        "va_data": {"eava": "use_example"}, "age_group": "neonate", "country": "Mozambique",
        "donotcalib": {"eava": ["congenital_malformation", "pneumonia", "sepsis_meningitis_inf", "ipre", "other"]},
        "donotcalib_type": "fixed",
    });
    let result = result_of(&body);
    let observed = [44., 168., 267., 268., 29., 164.];
    let shares: Vec<f64> = observed.iter().map(|x| x / 940.0).collect();
    let eava = result.row("eava");
    for (bound, values) in [
        ("mean", &eava.mean),
        ("lower_ci", &eava.lower_ci),
        ("upper_ci", &eava.upper_ci),
    ] {
        assert_eq!(values, &shares, "{bound}");
    }
    assert_eq!(result.deaths_of("eava"), observed);
    assert_eq!(result.lambda_of("eava"), None);
    assert!(eava.diagnostics.is_none());
}

/// §5.3: the column ranges run over every row, those of causes already excluded included, and
/// `nocalib_threshold` sets the cut.
#[test]
fn screening_ranges_include_the_rows_of_excluded_causes() {
    // Without the `other` row, columns a and b would vary by only 0.1 and 0.05.
    let matrix = [[0.7, 0.2, 0.1], [0.6, 0.25, 0.15], [0.05, 0.9, 0.05]];
    for (threshold, want) in [(0.1, [false, false, true]), (0.66, [true, false, true])] {
        let p = prepared(json!({
            "va_data": {"x": {"a": 10, "b": 20, "other": 5}}, "mmat_type": "fixed",
            "missmat": {"x": {"causes": ["a", "b", "other"], "matrix": matrix}},
            "nocalib_threshold": threshold,
        }));
        assert_eq!(p.donotcalib_tomodel[0], want, "threshold {threshold}");
    }
}
