//! Everything before the sampler that is deterministic: count vectors (§2), misclassification
//! inputs (§3), donotcalib (§4), Mmat_study and the screening (§5) of calibration-model.md.

use std::collections::{BTreeSet, HashMap};

use crate::data::{self, AgeGroup, StoredKind};
use crate::error::EngineError;
use crate::numeric::dirichlet_concentration;
use crate::request::{
    check_cause_names, CalibrationRequest, CcvaRecord, DonotcalibType, MmatType, Rules, UserMatrix,
    VaInput,
};

/// R's `all.equal` tolerance, used for "sums to 1".
const ALL_EQUAL_TOLERANCE: f64 = 1.5e-8;

/// 2.3.1's `learn` screen (§13.1) leaves out causes with an uncalibrated CSMF outside
/// [0.01, 0.99]: a cause with (almost) no deaths stalls the path correction (λ stays at 0.99)
/// and one with (almost) all of them leaves nothing to recalibrate.
pub const LEARN_BAND: (f64, f64) = (0.01, 0.99);

pub fn outside_learn_band(p_uncalib: f64) -> bool {
    p_uncalib < LEARN_BAND.0 || p_uncalib > LEARN_BAND.1
}

/// A square matrix whose rows and columns are both labelled by `causes`.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedMatrix {
    pub causes: Vec<String>,
    pub values: Vec<Vec<f64>>,
}

/// The deterministic state of a calibration, just before path correction.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub algorithms: Vec<String>,
    pub causes: Vec<String>,
    pub mmat_type: MmatType,
    /// K × C deaths.
    pub deaths: Vec<Vec<f64>>,
    /// K × C uncalibrated CSMF.
    pub p_uncalib: Vec<Vec<f64>>,
    /// Per algorithm, as prepared by R (cut to the study causes, or the full CHAMPS matrix when
    /// studycause_map is used).
    pub mmat_input: Vec<NamedMatrix>,
    /// K × C × C on the study causes (Dirichlet parameters, or a stochastic matrix for fixed).
    pub mmat_study: Vec<Vec<Vec<f64>>>,
    pub donotcalib_study: Vec<Vec<bool>>,
    /// K × C: `donotcalib_study` or screened out.
    pub donotcalib_tomodel: Vec<Vec<bool>>,
    pub ensemble: bool,
    /// η after defaults.
    pub pshrink_strength: f64,
    pub rules: Rules,
}

impl Prepared {
    pub fn calibrated(&self, k: usize) -> bool {
        self.donotcalib_tomodel[k].iter().filter(|x| !**x).count() > 1
    }
}

/// How the lower-cased labels of one algorithm's CCVA output map to broad causes
/// (cause_map). Under 2.3.1 (§13.2) labels that are all broad causes of the age group are
/// taken as they are, and the lookup also knows the labels 2.3.1 added (`diarrhea`, child).
pub struct LabelMap {
    age_group: AgeGroup,
    rules: Rules,
    all_broad: bool,
}

impl LabelMap {
    /// The map for these lower-cased labels (`Unspecified` already dropped).
    pub fn new<'a>(
        age_group: AgeGroup,
        rules: Rules,
        mut labels: impl Iterator<Item = &'a str>,
    ) -> LabelMap {
        let causes = age_group.causes();
        let all_broad =
            rules == Rules::V2_3_1 && labels.all(|label| causes.iter().any(|c| c == label));
        LabelMap {
            age_group,
            rules,
            all_broad,
        }
    }

    /// The index of `label`'s broad cause, or `None` for a label the rules do not know.
    pub fn broad_cause(&self, label: &str) -> Option<usize> {
        let map = data::cause_map(self.age_group);
        let broad = if self.all_broad {
            label
        } else {
            match map.lookup.get(label) {
                Some(broad) => broad.as_str(),
                None if self.rules == Rules::V2_3_1 => data::labels_added_in_2_3_1(self.age_group)
                    .iter()
                    .find(|(known, _)| *known == label)
                    .map(|(_, broad)| *broad)?,
                None => return None,
            }
        };
        Some(
            map.broad_causes
                .iter()
                .position(|c| c == broad)
                .expect("cause_map lookup values are broad causes"),
        )
    }
}

/// Counts per broad cause of individual-level CCVA output, as cause_map() + column sums:
/// `Unspecified` records dropped, labels lower-cased and mapped by [`LabelMap`], each ID
/// counted once per distinct broad cause it carries.
pub fn cause_map_counts<'a>(
    records: impl Iterator<Item = (&'a str, &'a str)>,
    age_group: AgeGroup,
    rules: Rules,
    path: &str,
) -> Result<Vec<f64>, EngineError> {
    // (ID, label as given, lower-cased label)
    let records: Vec<(&str, &str, String)> = records
        .filter(|(_, label)| !label.eq_ignore_ascii_case("unspecified"))
        .map(|(id, label)| (id, label, label.to_lowercase()))
        .collect();
    let labels = LabelMap::new(age_group, rules, records.iter().map(|(_, _, l)| l.as_str()));
    let mut per_id: HashMap<&str, BTreeSet<usize>> = HashMap::new();
    let mut unknown: Vec<&str> = Vec::new();
    for (id, given, label) in &records {
        match labels.broad_cause(label) {
            Some(j) => {
                per_id.entry(id).or_default().insert(j);
            }
            None => {
                if !unknown.contains(given) {
                    unknown.push(given);
                }
            }
        }
    }
    if !unknown.is_empty() {
        let shown: Vec<String> = unknown.iter().take(20).map(|u| format!("'{u}'")).collect();
        return Err(EngineError::invalid(
            path,
            format!(
                "unknown cause label(s) for age group {}: {}{}",
                age_group.as_str(),
                shown.join(", "),
                if unknown.len() > 20 { ", …" } else { "" }
            ),
        ));
    }
    let mut counts = vec![0.0; age_group.causes().len()];
    for set in per_id.values() {
        for &j in set {
            counts[j] += 1.0;
        }
    }
    Ok(counts)
}

fn require_age_group(
    age_group: Option<AgeGroup>,
    path: &str,
    why: &str,
) -> Result<AgeGroup, EngineError> {
    age_group
        .ok_or_else(|| EngineError::invalid("age_group", format!("is required {why} ({path})")))
}

/// One algorithm's data as (cause names, counts) in its own order.
pub fn counts_of(
    algorithm: &str,
    input: &VaInput,
    age_group: Option<AgeGroup>,
    rules: Rules,
) -> Result<(Vec<String>, Vec<f64>), EngineError> {
    let path = format!("va_data.{algorithm}");
    let canonical = |why: &str| -> Result<Vec<String>, EngineError> {
        Ok(require_age_group(age_group, &path, why)?.causes().to_vec())
    };
    match input {
        VaInput::Example => {
            let age_group = require_age_group(age_group, &path, "for the example data")?;
            let example = data::example_output(age_group, algorithm).ok_or_else(|| {
                EngineError::invalid(
                    &path,
                    format!(
                        "no example data for algorithm '{algorithm}' (examples exist for eava, insilicova and interva)"
                    ),
                )
            })?;
            let records = example
                .ids
                .iter()
                .zip(&example.causes)
                .map(|(i, c)| (i.as_str(), c.as_str()));
            Ok((
                age_group.causes().to_vec(),
                cause_map_counts(records, age_group, rules, &path)?,
            ))
        }
        VaInput::Records(records) => {
            let age_group =
                require_age_group(age_group, &path, "to map CCVA output to broad causes")?;
            let counts = cause_map_counts(
                records
                    .iter()
                    .map(|CcvaRecord { id, cause }| (id.as_str(), cause.as_str())),
                age_group,
                rules,
                &path,
            )?;
            Ok((age_group.causes().to_vec(), counts))
        }
        VaInput::Indicator { causes, rows } => {
            let causes = match causes {
                Some(c) => c.clone(),
                None => canonical("for a matrix without cause names")?,
            };
            check_cause_names(&causes, &format!("{path}.causes"))?;
            let mut counts = vec![0.0; causes.len()];
            for (i, row) in rows.iter().enumerate() {
                let rpath = format!("{path}.rows[{i}]");
                if row.len() != causes.len() {
                    return Err(EngineError::invalid(
                        rpath,
                        format!(
                            "has {} entries, expected {} (one per cause)",
                            row.len(),
                            causes.len()
                        ),
                    ));
                }
                let sum: f64 = row.iter().sum();
                let nonzero = row.iter().filter(|x| **x != 0.0).count();
                if (sum - 1.0).abs() > ALL_EQUAL_TOLERANCE
                    || nonzero != 1
                    || row.iter().any(|x| *x < 0.0)
                {
                    return Err(EngineError::invalid(
                        rpath,
                        "each row must have exactly one 1 and 0 elsewhere",
                    ));
                }
                for (c, x) in counts.iter_mut().zip(row) {
                    *c += x;
                }
            }
            if rows.is_empty() {
                return Err(EngineError::invalid(path, "the matrix has no rows"));
            }
            Ok((causes, counts))
        }
        VaInput::Counts { causes, counts } => {
            let causes = match causes {
                Some(c) => c.clone(),
                None => canonical("for counts without cause names")?,
            };
            check_cause_names(&causes, &path)?;
            if counts.len() != causes.len() {
                return Err(EngineError::invalid(
                    path,
                    format!(
                        "has {} counts, expected {} (one per cause)",
                        counts.len(),
                        causes.len()
                    ),
                ));
            }
            if let Some(i) = counts.iter().position(|x| !x.is_finite() || *x < 0.0) {
                return Err(EngineError::invalid(
                    format!("{path}.{}", causes[i]),
                    "counts must be non-negative numbers",
                ));
            }
            let total: f64 = counts.iter().sum();
            if total != counts.iter().map(|x| x.floor()).sum::<f64>() {
                return Err(EngineError::invalid(
                    path,
                    "the counts must add up to a whole number",
                ));
            }
            Ok((causes, counts.clone()))
        }
    }
}

fn check_positive_finite(values: &[Vec<f64>], path: &str, strict: bool) -> Result<(), EngineError> {
    for (i, row) in values.iter().enumerate() {
        for (j, x) in row.iter().enumerate() {
            let ok = x.is_finite() && if strict { *x > 0.0 } else { *x >= 0.0 };
            if !ok {
                let rule = if strict {
                    "strictly positive"
                } else {
                    "non-negative"
                };
                return Err(EngineError::invalid(
                    format!("{path}[{i}][{j}]"),
                    format!("entries must be finite and {rule}, got {x}"),
                ));
            }
        }
    }
    Ok(())
}

fn check_square(values: &[Vec<f64>], n: usize, path: &str) -> Result<(), EngineError> {
    if values.len() != n || values.iter().any(|r| r.len() != n) {
        return Err(EngineError::invalid(
            path,
            format!("must be a {n} × {n} matrix (one row and one column per cause)"),
        ));
    }
    Ok(())
}

fn check_rows_sum_to_one(values: &[Vec<f64>], path: &str) -> Result<(), EngineError> {
    for (i, row) in values.iter().enumerate() {
        let s: f64 = row.iter().sum();
        if (s - 1.0).abs() > ALL_EQUAL_TOLERANCE {
            return Err(EngineError::invalid(
                format!("{path}[{i}]"),
                format!("each row must sum to 1, this one sums to {s}"),
            ));
        }
    }
    Ok(())
}

/// Dirichlet parameters fitted row by row to samples of a misclassification matrix (§3.2).
pub fn fit_dirichlet_to_samples(
    samples: &[Vec<Vec<f64>>],
    n: usize,
    path: &str,
) -> Result<Vec<Vec<f64>>, EngineError> {
    if samples.len() < 2 {
        return Err(EngineError::invalid(path, "needs at least 2 samples"));
    }
    for (s, m) in samples.iter().enumerate() {
        let spath = format!("{path}[{s}]");
        check_square(m, n, &spath)?;
        check_positive_finite(m, &spath, true).map_err(|e| match e {
            EngineError::Invalid { field, message } => EngineError::invalid(
                field,
                format!("{message} (samples need entries > 0: a zero has no Dirichlet likelihood)"),
            ),
            other => other,
        })?;
        check_rows_sum_to_one(m, &spath)?;
    }
    let count = samples.len() as f64;
    (0..n)
        .map(|i| {
            let mean: Vec<f64> = (0..n)
                .map(|j| samples.iter().map(|m| m[i][j]).sum::<f64>() / count)
                .collect();
            let target = -samples
                .iter()
                .map(|m| (0..n).map(|j| mean[j] * m[i][j].ln()).sum::<f64>())
                .sum::<f64>()
                / count;
            let a = dirichlet_concentration(&mean, target).ok_or_else(|| {
                EngineError::invalid(
                    path.to_string(),
                    format!("row {i}: the samples do not vary, so no Dirichlet can be fitted"),
                )
            })?;
            Ok(mean.iter().map(|m| a * m).collect())
        })
        .collect()
}

/// The misclassification input of one algorithm before matching to the study causes.
fn matrix_input(
    request: &CalibrationRequest,
    k: usize,
    algorithm: &str,
) -> Result<NamedMatrix, EngineError> {
    let mmat_type = request.mmat_type;
    if let Some(user) = &request.missmat {
        let path = format!("missmat.{algorithm}");
        let user = &user[k].1;
        let causes = user.causes().to_vec();
        check_cause_names(&causes, &format!("{path}.causes"))?;
        let n = causes.len();
        let values = match (user, mmat_type) {
            (UserMatrix::Matrix { values, .. }, MmatType::Prior) => {
                check_square(values, n, &format!("{path}.matrix"))?;
                check_positive_finite(values, &format!("{path}.matrix"), true)?;
                values.clone()
            }
            (UserMatrix::Matrix { values, .. }, MmatType::Fixed) => {
                check_square(values, n, &format!("{path}.matrix"))?;
                check_positive_finite(values, &format!("{path}.matrix"), false)?;
                check_rows_sum_to_one(values, &format!("{path}.matrix"))?;
                values.clone()
            }
            (UserMatrix::Samples { samples, .. }, MmatType::Samples) => {
                fit_dirichlet_to_samples(samples, n, &format!("{path}.samples"))?
            }
            (UserMatrix::Matrix { .. }, MmatType::Samples) => return Err(EngineError::invalid(
                path,
                "mmat_type \"samples\" needs `samples` (samples × rows × columns), not `matrix`",
            )),
            (UserMatrix::Samples { .. }, _) => {
                return Err(EngineError::invalid(
                    path,
                    format!(
                        "`samples` need mmat_type \"samples\", not \"{}\"",
                        mmat_type.as_str()
                    ),
                ))
            }
        };
        return Ok(NamedMatrix { causes, values });
    }
    let kind = match mmat_type {
        MmatType::Prior => StoredKind::Dirichlet,
        MmatType::Fixed => StoredKind::PosteriorMean,
        MmatType::Samples => {
            return Err(EngineError::invalid(
                "missmat",
                "mmat_type \"samples\" has no stored matrices: supply missmat with samples",
            ))
        }
    };
    let age_group = request.age_group.ok_or_else(|| {
        EngineError::invalid(
            "age_group",
            "is required to use the stored CHAMPS matrices (or supply missmat)",
        )
    })?;
    let country = request.country.as_deref().ok_or_else(|| {
        EngineError::invalid(
            "country",
            "is required to use the stored CHAMPS matrices (or supply missmat)",
        )
    })?;
    let stored = data::stored_matrix(age_group, algorithm, country, kind).ok_or_else(|| {
        EngineError::invalid(
            format!("va_data.{algorithm}"),
            format!(
                "no stored misclassification matrix for algorithm '{algorithm}' (stored: eava, insilicova, interva); supply missmat"
            ),
        )
    })?;
    Ok(NamedMatrix {
        causes: stored.row_causes.clone(),
        values: stored.values.clone(),
    })
}

fn normalise_rows(values: &mut [Vec<f64>]) {
    for row in values {
        let s: f64 = row.iter().sum();
        for x in row.iter_mut() {
            *x /= s;
        }
    }
}

fn cut(m: &NamedMatrix, keep: &[usize]) -> Vec<Vec<f64>> {
    keep.iter()
        .map(|&i| keep.iter().map(|&j| m.values[i][j]).collect())
        .collect()
}

/// §5.2: the study-cause matrix built from a CHAMPS matrix through studycause_map.
fn expand_to_study_causes(
    input: &NamedMatrix,
    champs_of_study: &[usize],
    mmat_type: MmatType,
) -> Vec<Vec<f64>> {
    // U: distinct CHAMPS causes in order of first appearance.
    let mut u: Vec<usize> = Vec::new();
    for &c in champs_of_study {
        if !u.contains(&c) {
            u.push(c);
        }
    }
    let cut_u = cut(input, &u);
    let pos = |c: usize| {
        u.iter()
            .position(|&x| x == c)
            .expect("study cause maps into U")
    };
    let weight: Vec<f64> = cut_u.iter().map(|r| r.iter().sum()).collect();
    let mut m = cut_u.clone();
    normalise_rows(&mut m);
    let epsilon = if mmat_type == MmatType::Fixed {
        0.0
    } else {
        0.001
    };
    let f = |c: usize| champs_of_study.iter().filter(|&&x| x == c).count() as f64;
    let n = champs_of_study.len();
    let mut out = vec![vec![0.0; n]; n];
    for s in 0..n {
        let cs = pos(champs_of_study[s]);
        for t in 0..n {
            let ct = pos(champs_of_study[t]);
            let ft = f(champs_of_study[t]);
            let b = if cs == ct && ft > 1.0 {
                if s == t {
                    m[cs][cs] * (1.0 - epsilon)
                } else {
                    m[cs][cs] * epsilon / (ft - 1.0)
                }
            } else {
                m[cs][ct] / ft
            };
            out[s][t] = if mmat_type == MmatType::Fixed {
                b
            } else {
                weight[cs] * b
            };
        }
    }
    out
}

/// §2–§5: from a request to the deterministic state before path correction.
pub fn prepare(request: &CalibrationRequest) -> Result<Prepared, EngineError> {
    if request.va_data.is_empty() {
        return Err(EngineError::invalid(
            "va_data",
            "must contain at least one algorithm",
        ));
    }
    let algorithms: Vec<String> = request.va_data.iter().map(|(a, _)| a.clone()).collect();

    // §2: counts, reordered to the first algorithm's cause order.
    let mut causes: Vec<String> = Vec::new();
    let mut deaths: Vec<Vec<f64>> = Vec::new();
    for (k, (algorithm, input)) in request.va_data.iter().enumerate() {
        let (names, counts) = counts_of(algorithm, input, request.age_group, request.rules)?;
        if k == 0 {
            causes = names;
            deaths.push(counts);
            continue;
        }
        let mut a: Vec<&String> = names.iter().collect();
        let mut b: Vec<&String> = causes.iter().collect();
        a.sort();
        b.sort();
        if a != b {
            return Err(EngineError::invalid(
                format!("va_data.{algorithm}"),
                format!(
                    "its causes ({}) differ from those of {} ({}); every algorithm must report the same causes",
                    names.join(", "),
                    algorithms[0],
                    causes.join(", ")
                ),
            ));
        }
        deaths.push(
            causes
                .iter()
                .map(|c| counts[names.iter().position(|n| n == c).expect("same cause set")])
                .collect(),
        );
    }
    let n_causes = causes.len();
    if n_causes < 2 {
        return Err(EngineError::invalid(
            "va_data",
            "at least 2 causes are needed to calibrate",
        ));
    }
    for (k, row) in deaths.iter().enumerate() {
        if row.iter().sum::<f64>() <= 0.0 {
            return Err(EngineError::invalid(
                format!("va_data.{}", algorithms[k]),
                "has no deaths (after dropping Unspecified); at least one is needed",
            ));
        }
    }
    let p_uncalib: Vec<Vec<f64>> = deaths
        .iter()
        .map(|row| {
            let total: f64 = row.iter().sum();
            row.iter().map(|x| x / total).collect()
        })
        .collect();

    // §3: misclassification inputs, matched to the study causes.
    let inputs: Vec<NamedMatrix> = algorithms
        .iter()
        .enumerate()
        .map(|(k, a)| matrix_input(request, k, a))
        .collect::<Result<_, _>>()?;
    let subset = causes.iter().all(|c| inputs[0].causes.contains(c));
    // studymap_values[j]: the CHAMPS cause of study cause j, when studycause_map is used.
    type Matched = (Vec<NamedMatrix>, Vec<Vec<Vec<f64>>>, Option<Vec<String>>);
    let (mmat_input, mmat_study, studymap_values): Matched = if subset {
        let mut cut_inputs = Vec::with_capacity(inputs.len());
        for (k, m) in inputs.iter().enumerate() {
            let keep: Vec<usize> = causes
                .iter()
                .map(|c| m.causes.iter().position(|x| x == c))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    EngineError::invalid(
                        format!("missmat.{}", algorithms[k]),
                        "the matrix must cover every study cause",
                    )
                })?;
            let mut values = cut(m, &keep);
            if request.mmat_type == MmatType::Fixed {
                normalise_rows(&mut values);
            }
            cut_inputs.push(NamedMatrix {
                causes: causes.clone(),
                values,
            });
        }
        let study = cut_inputs.iter().map(|m| m.values.clone()).collect();
        (cut_inputs, study, None)
    } else {
        let map = request.studycause_map.as_ref().ok_or_else(|| {
            let missing: Vec<&String> = causes
                .iter()
                .filter(|c| !inputs[0].causes.contains(c))
                .collect();
            EngineError::invalid(
                "studycause_map",
                format!(
                    "is required: cause(s) {} are not causes of the misclassification matrix ({})",
                    missing
                        .iter()
                        .map(|c| format!("'{c}'"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    inputs[0].causes.join(", ")
                ),
            )
        })?;
        let mut study_map: Vec<&String> = Vec::with_capacity(n_causes);
        for c in &causes {
            let target = map
                .iter()
                .find(|(s, _)| s == c)
                .map(|(_, t)| t)
                .ok_or_else(|| {
                    EngineError::invalid(
                        "studycause_map",
                        format!("does not map study cause '{c}'"),
                    )
                })?;
            study_map.push(target);
        }
        let mut study = Vec::with_capacity(inputs.len());
        for (k, m) in inputs.iter().enumerate() {
            let champs: Vec<usize> = study_map
                .iter()
                .map(|t| {
                    m.causes.iter().position(|x| x == *t).ok_or_else(|| {
                        EngineError::invalid(
                            format!("studycause_map.{t}"),
                            format!(
                                "'{t}' is not a cause of {}'s misclassification matrix ({})",
                                algorithms[k],
                                m.causes.join(", ")
                            ),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
            study.push(expand_to_study_causes(m, &champs, request.mmat_type));
        }
        let values = study_map.iter().map(|s| (*s).clone()).collect();
        (inputs, study, Some(values))
    };

    // §4: donotcalib.
    let donotcalib_study: Vec<Vec<bool>> = match &request.donotcalib {
        None => (0..algorithms.len())
            .map(|_| causes.iter().map(|c| c == "other").collect())
            .collect(),
        Some(lists) => lists
            .iter()
            .map(|(algorithm, list)| {
                let list = match list {
                    None => return Ok(vec![false; n_causes]),
                    Some(l) => l,
                };
                if list.iter().all(|c| causes.contains(c)) {
                    return Ok(causes.iter().map(|c| list.contains(c)).collect());
                }
                if let Some(values) = &studymap_values {
                    if list.iter().all(|c| values.contains(c)) {
                        return Ok(values.iter().map(|v| list.contains(v)).collect());
                    }
                }
                let unknown: Vec<&String> = list.iter().filter(|c| !causes.contains(c)).collect();
                Err(EngineError::invalid(
                    format!("donotcalib.{algorithm}"),
                    format!(
                        "unknown cause(s) {}: use study causes ({}) or their CHAMPS causes",
                        unknown
                            .iter()
                            .map(|c| format!("'{c}'"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        causes.join(", ")
                    ),
                ))
            })
            .collect::<Result<_, _>>()?,
    };

    // §5.3: screening.
    let donotcalib_tomodel: Vec<Vec<bool>> = mmat_study
        .iter()
        .zip(&donotcalib_study)
        .zip(&p_uncalib)
        .map(|((m, excluded), p_uncalib)| {
            if request.donotcalib_type == DonotcalibType::Fixed {
                return excluded.clone();
            }
            let mut mean = m.clone();
            normalise_rows(&mut mean);
            (0..n_causes)
                .map(|j| {
                    let (lo, hi) = mean
                        .iter()
                        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), r| {
                            (lo.min(r[j]), hi.max(r[j]))
                        });
                    excluded[j]
                        || hi - lo <= request.nocalib_threshold
                        || (request.rules == Rules::V2_3_1 && outside_learn_band(p_uncalib[j]))
                })
                .collect()
        })
        .collect();

    let ensemble = algorithms.len() > 1 && request.ensemble.unwrap_or(true);
    let pshrink_strength = if request.path_correction {
        0.0
    } else {
        request.pshrink_strength.unwrap_or(4.0)
    };
    let prepared = Prepared {
        algorithms,
        causes,
        mmat_type: request.mmat_type,
        deaths,
        p_uncalib,
        mmat_input,
        mmat_study,
        donotcalib_study,
        donotcalib_tomodel,
        ensemble,
        pshrink_strength,
        rules: request.rules,
    };
    for k in 0..prepared.algorithms.len() {
        if prepared.calibrated(k) {
            let in_s: f64 = (0..n_causes)
                .filter(|&j| !prepared.donotcalib_tomodel[k][j])
                .map(|j| prepared.deaths[k][j])
                .sum();
            if in_s <= 0.0 {
                return Err(EngineError::invalid(
                    format!("va_data.{}", prepared.algorithms[k]),
                    "has no deaths among the causes to calibrate",
                ));
            }
        }
    }
    Ok(prepared)
}
