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

#[derive(Debug, Deserialize)]
struct AgeGroupMatrices {
    algorithms: HashMap<String, AlgorithmMatrices>,
}

#[derive(Debug, Deserialize)]
struct MissmatFile {
    age_groups: HashMap<String, AgeGroupMatrices>,
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

fn missmat_file() -> &'static MissmatFile {
    static FILE: OnceLock<MissmatFile> = OnceLock::new();
    FILE.get_or_init(|| {
        serde_json::from_str(include_str!("../data/CCVA_missmat.json"))
            .expect("bundled CCVA_missmat.json is valid")
    })
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
    let algorithm = missmat_file()
        .age_groups
        .get(age_group.as_str())?
        .algorithms
        .get(algorithm)?;
    let by_country = match kind {
        StoredKind::Dirichlet => &algorithm.as_dirich,
        StoredKind::PosteriorMean => &algorithm.postmean,
    };
    by_country.get(resolve_country(country))
}

/// The COMSA-Mozambique CCVA output bundled with vacalibration 2.2 (`comsamoz_CCVAoutput`).
pub fn example_output(age_group: AgeGroup, algorithm: &str) -> Option<&'static CcvaOutput> {
    type Examples = HashMap<(AgeGroup, String), CcvaOutput>;
    static EXAMPLES: OnceLock<Examples> = OnceLock::new();
    let examples = EXAMPLES.get_or_init(|| {
        let file: serde_json::Value =
            serde_json::from_str(include_str!("../data/comsamoz_CCVAoutput.json"))
                .expect("bundled comsamoz_CCVAoutput.json is valid");
        let mut examples = Examples::new();
        for age_group in [AgeGroup::Neonate, AgeGroup::Child] {
            let tables = &file["age_groups"][age_group.as_str()];
            for algorithm in STORED_ALGORITHMS {
                let table = &tables[algorithm];
                let cause_column = if table.get("cause").is_some() {
                    "cause"
                } else {
                    "cause1"
                };
                let strings = |column: &str| -> Vec<String> {
                    table[column]
                        .as_array()
                        .expect("example column is an array")
                        .iter()
                        .map(|v| match v {
                            serde_json::Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                        .collect()
                };
                examples.insert(
                    (age_group, algorithm.to_string()),
                    CcvaOutput {
                        ids: strings("ID"),
                        causes: strings(cause_column),
                    },
                );
            }
        }
        examples
    });
    examples.get(&(age_group, algorithm.to_string()))
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
