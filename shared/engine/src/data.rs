//! The data bundled with vacalibration 2.2 (CHAMPS misclassification estimates, the cause_map
//! tables and the COMSA-Mozambique example), embedded in the binary and parsed once on first
//! use. MIT licensed, copyright Sandipan Pramanik; see `data/README.md`.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Deserialize;

/// The algorithms that have stored CHAMPS matrices.
pub const STORED_ALGORITHMS: [&str; 3] = ["eava", "insilicova", "interva"];

/// Countries with their own CHAMPS matrices; any other country uses `other`.
pub const COUNTRIES: [&str; 7] = [
    "Bangladesh",
    "Ethiopia",
    "Kenya",
    "Mali",
    "Mozambique",
    "Sierra Leone",
    "South Africa",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgeGroup {
    Neonate,
    Child,
}

impl AgeGroup {
    pub fn parse(s: &str) -> Option<AgeGroup> {
        match s {
            "neonate" => Some(AgeGroup::Neonate),
            "child" => Some(AgeGroup::Child),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AgeGroup::Neonate => "neonate",
            AgeGroup::Child => "child",
        }
    }

    /// Broad causes in the stored (canonical) order.
    pub fn causes(self) -> &'static [String] {
        &cause_map(self).broad_causes
    }
}

#[derive(Debug, Deserialize)]
pub struct StoredMatrix {
    pub row_causes: Vec<String>,
    pub col_causes: Vec<String>,
    pub values: Vec<Vec<f64>>,
}

#[derive(Debug, Deserialize)]
struct AlgorithmMatrices {
    #[serde(rename = "asDirich")]
    as_dirich: HashMap<String, StoredMatrix>,
    postmean: HashMap<String, StoredMatrix>,
}

#[derive(Deserialize)]
struct AgeGroupMatrices<'a> {
    #[serde(borrow)]
    algorithms: HashMap<String, &'a serde_json::value::RawValue>,
}

/// The matrix file, with each algorithm's matrices left unparsed until first use.
#[derive(Deserialize)]
struct MissmatFile<'a> {
    #[serde(borrow)]
    age_groups: HashMap<String, AgeGroupMatrices<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct CauseMap {
    pub broad_causes: Vec<String>,
    /// Lower-case specific label → broad cause.
    pub lookup: HashMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct CauseMapFile {
    neonate: CauseMap,
    child: CauseMap,
}

/// One algorithm's individual-level CCVA output: an ID and a cause label per death.
#[derive(Debug)]
pub struct CcvaOutput {
    pub ids: Vec<String>,
    pub causes: Vec<String>,
}

/// One algorithm's stored matrices, parsed on first use: a request needs one or three of the
/// six, and parsing them all was a tenth of a single-algorithm run.
fn algorithm_matrices(age_group: AgeGroup, algorithm: &str) -> Option<&'static AlgorithmMatrices> {
    static FILE: OnceLock<MissmatFile<'static>> = OnceLock::new();
    static PARSED: [[OnceLock<AlgorithmMatrices>; STORED_ALGORITHMS.len()]; 2] =
        [const { [const { OnceLock::new() }; STORED_ALGORITHMS.len()] }; 2];
    let a = STORED_ALGORITHMS.iter().position(|&s| s == algorithm)?;
    let file = FILE.get_or_init(|| {
        serde_json::from_str(include_str!("../data/CCVA_missmat.json"))
            .expect("bundled CCVA_missmat.json is valid")
    });
    let raw = *file
        .age_groups
        .get(age_group.as_str())?
        .algorithms
        .get(algorithm)?;
    Some(PARSED[age_group as usize][a].get_or_init(|| {
        serde_json::from_str(raw.get()).expect("bundled CHAMPS matrices are valid")
    }))
}

fn cause_map_file() -> &'static CauseMapFile {
    static FILE: OnceLock<CauseMapFile> = OnceLock::new();
    FILE.get_or_init(|| {
        serde_json::from_str(include_str!("../data/cause_map.json"))
            .expect("bundled cause_map.json is valid")
    })
}

pub fn cause_map(age_group: AgeGroup) -> &'static CauseMap {
    match age_group {
        AgeGroup::Neonate => &cause_map_file().neonate,
        AgeGroup::Child => &cause_map_file().child,
    }
}

/// Labels (lower case) that vacalibration 2.3.1's cause_map adds to 2.2's table, with their
/// broad cause (calibration-model.md §13.2).
pub fn labels_added_in_2_3_1(age_group: AgeGroup) -> &'static [(&'static str, &'static str)] {
    match age_group {
        AgeGroup::Neonate => &[],
        AgeGroup::Child => &[("diarrhea", "diarrhea")],
    }
}

/// The stored country name for `country`: matched case-insensitively (after trimming) against
/// the seven CHAMPS countries, `other` for anything else.
pub fn resolve_country(country: &str) -> &'static str {
    let wanted = country.trim();
    COUNTRIES
        .iter()
        .find(|c| c.eq_ignore_ascii_case(wanted))
        .copied()
        .unwrap_or("other")
}

/// Which stored representation of the CHAMPS estimates to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredKind {
    /// Dirichlet parameters (`asDirich`), for `mmat_type = prior`.
    Dirichlet,
    /// Posterior mean matrix (`postmean`), for `mmat_type = fixed`.
    PosteriorMean,
}

/// The stored CHAMPS matrix, or `None` for an algorithm without one.
pub fn stored_matrix(
    age_group: AgeGroup,
    algorithm: &str,
    country: &str,
    kind: StoredKind,
) -> Option<&'static StoredMatrix> {
    let algorithm = algorithm_matrices(age_group, algorithm)?;
    let by_country = match kind {
        StoredKind::Dirichlet => &algorithm.as_dirich,
        StoredKind::PosteriorMean => &algorithm.postmean,
    };
    by_country.get(resolve_country(country))
}

/// The example file, split into one unparsed JSON table per age group and algorithm.
#[derive(Deserialize)]
struct ExampleIndex {
    #[serde(borrow)]
    age_groups: HashMap<String, HashMap<String, &'static serde_json::value::RawValue>>,
}

/// One example table: `ID` and `cause` (EAVA) or `cause1` (openVA) columns.
#[derive(Deserialize)]
struct ExampleTable {
    #[serde(rename = "ID")]
    ids: Vec<serde_json::Value>,
    cause: Option<Vec<String>>,
    cause1: Option<Vec<String>>,
}

/// The COMSA-Mozambique CCVA output bundled with vacalibration 2.2 (`comsamoz_CCVAoutput`).
///
/// Only the requested table is parsed (on first use): the file holds six, and parsing all of
/// them took a fifth of a single-algorithm `vacal calibrate --example` run.
pub fn example_output(age_group: AgeGroup, algorithm: &str) -> Option<&'static CcvaOutput> {
    static INDEX: OnceLock<ExampleIndex> = OnceLock::new();
    static TABLES: [[OnceLock<CcvaOutput>; STORED_ALGORITHMS.len()]; 2] =
        [const { [const { OnceLock::new() }; STORED_ALGORITHMS.len()] }; 2];
    let a = STORED_ALGORITHMS.iter().position(|&s| s == algorithm)?;
    let slot = &TABLES[age_group as usize][a];
    Some(slot.get_or_init(|| {
        let index = INDEX.get_or_init(|| {
            serde_json::from_str(include_str!("../data/comsamoz_CCVAoutput.json"))
                .expect("bundled comsamoz_CCVAoutput.json is valid")
        });
        let raw = index.age_groups[age_group.as_str()][algorithm];
        let table: ExampleTable =
            serde_json::from_str(raw.get()).expect("bundled example table is valid");
        CcvaOutput {
            ids: table
                .ids
                .into_iter()
                .map(|v| match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                })
                .collect(),
            causes: table
                .cause
                .or(table.cause1)
                .expect("example table has a cause column"),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stored_matrix_is_present_and_square() {
        for age_group in [AgeGroup::Neonate, AgeGroup::Child] {
            let n = age_group.causes().len();
            for algorithm in STORED_ALGORITHMS {
                for country in COUNTRIES.iter().copied().chain(["Atlantis"]) {
                    for kind in [StoredKind::Dirichlet, StoredKind::PosteriorMean] {
                        let m = stored_matrix(age_group, algorithm, country, kind).unwrap();
                        assert_eq!(m.row_causes, age_group.causes());
                        assert_eq!(m.col_causes, age_group.causes());
                        assert_eq!(m.values.len(), n);
                        assert!(m.values.iter().all(|r| r.len() == n));
                    }
                }
            }
        }
    }

    #[test]
    fn country_resolution_is_case_insensitive_with_other_fallback() {
        assert_eq!(resolve_country("Mozambique"), "Mozambique");
        assert_eq!(resolve_country(" sierra leone "), "Sierra Leone");
        assert_eq!(resolve_country("Nigeria"), "other");
    }

    #[test]
    fn stored_values_are_exact_doubles() {
        // First entry of neonatal EAVA Bangladesh asDirich, as written by R.
        let m = stored_matrix(
            AgeGroup::Neonate,
            "eava",
            "Bangladesh",
            StoredKind::Dirichlet,
        )
        .unwrap();
        assert_eq!(m.values[0][0], 12.231520312239194);
    }

    #[test]
    fn example_tables_have_documented_sizes() {
        let sizes = [
            (AgeGroup::Neonate, "eava", 1190),
            (AgeGroup::Neonate, "insilicova", 1190),
            (AgeGroup::Child, "eava", 2796),
            (AgeGroup::Child, "interva", 2798),
        ];
        for (age_group, algorithm, n) in sizes {
            let e = example_output(age_group, algorithm).unwrap();
            assert_eq!(e.ids.len(), n);
            assert_eq!(e.causes.len(), n);
        }
    }
}
