//! The calibration request: everything `calibrate` needs, with R's defaults (its JSON form,
//! the API's request body, is read and written by vacal-core's `request`).

use crate::data::AgeGroup;
use crate::error::EngineError;

fn invalid(field: impl Into<String>, message: impl Into<String>) -> EngineError {
    EngineError::invalid(field, message)
}

/// Causes per problem above which a request is refused (the CHAMPS matrices have 6 or 9).
pub const MAX_CAUSES: usize = 40;
/// Algorithms per request above which a request is refused.
pub const MAX_ALGORITHMS: usize = 10;
/// Upper bound on chains × (warm-up + draws × thin), so one request cannot hog a worker.
pub const MAX_TOTAL_ITERATIONS: u64 = 20_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MmatType {
    Prior,
    Fixed,
    Samples,
}

impl MmatType {
    pub fn as_str(self) -> &'static str {
        match self {
            MmatType::Prior => "prior",
            MmatType::Fixed => "fixed",
            MmatType::Samples => "samples",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DonotcalibType {
    Learn,
    Fixed,
}

impl DonotcalibType {
    pub fn as_str(self) -> &'static str {
        match self {
            DonotcalibType::Learn => "learn",
            DonotcalibType::Fixed => "fixed",
        }
    }
}

/// Which release of vacalibration's rules to follow (calibration-model.md §13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rules {
    /// vacalibration 2.2 exactly: replays of runs made with CRAN's release.
    V2_2,
    /// vacalibration 2.3.1: the `learn` screen also leaves out causes whose uncalibrated CSMF
    /// is below 0.01 or above 0.99, and cause_map takes broad-cause labels directly.
    #[default]
    V2_3_1,
}

impl Rules {
    pub const ALL: [Rules; 2] = [Rules::V2_3_1, Rules::V2_2];

    pub fn as_str(self) -> &'static str {
        match self {
            Rules::V2_2 => "2.2",
            Rules::V2_3_1 => "2.3.1",
        }
    }

    pub fn parse(s: &str) -> Option<Rules> {
        Rules::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplerKind {
    /// NUTS, unless the model has Dirichlet parameters far below 1 (then Gibbs).
    Auto,
    Nuts,
    Gibbs,
}

impl SamplerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SamplerKind::Auto => "auto",
            SamplerKind::Nuts => "nuts",
            SamplerKind::Gibbs => "gibbs",
        }
    }
}

/// One death of individual-level CCVA output.
#[derive(Debug, Clone, PartialEq)]
pub struct CcvaRecord {
    pub id: String,
    pub cause: String,
}

/// One algorithm's VA data, in any of the accepted forms.
#[derive(Debug, Clone, PartialEq)]
pub enum VaInput {
    /// The bundled COMSA-Mozambique output of this algorithm for the age group.
    Example,
    /// Individual-level CCVA output (`ID` + `cause` or `cause1`), mapped with cause_map.
    Records(Vec<CcvaRecord>),
    /// Individuals × causes indicator matrix; `causes` = None means the age group's order.
    Indicator {
        causes: Option<Vec<String>>,
        rows: Vec<Vec<f64>>,
    },
    /// Death counts per cause; `causes` = None means the age group's order.
    Counts {
        causes: Option<Vec<String>>,
        counts: Vec<f64>,
    },
}

/// A user-supplied misclassification matrix (rows: true causes, columns: VA causes).
#[derive(Debug, Clone, PartialEq)]
pub enum UserMatrix {
    /// Dirichlet parameters (`prior`) or a row-stochastic matrix (`fixed`).
    Matrix {
        causes: Vec<String>,
        values: Vec<Vec<f64>>,
    },
    /// Samples × rows × columns of row-stochastic matrices (`samples`).
    Samples {
        causes: Vec<String>,
        samples: Vec<Vec<Vec<f64>>>,
    },
}

impl UserMatrix {
    pub fn causes(&self) -> &[String] {
        match self {
            UserMatrix::Matrix { causes, .. } | UserMatrix::Samples { causes, .. } => causes,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct McmcRequest {
    /// Total retained draws over all chains.
    pub n_mcmc: u64,
    /// Total warm-up iterations over all chains.
    pub n_burn: u64,
    pub n_thin: u64,
    pub n_chain: u64,
    pub seed: u64,
    pub sampler: SamplerKind,
}

impl Default for McmcRequest {
    fn default() -> Self {
        McmcRequest {
            n_mcmc: 5000,
            n_burn: 5000,
            n_thin: 1,
            n_chain: 4,
            seed: 1,
            sampler: SamplerKind::Auto,
        }
    }
}

/// A calibration request with R's defaults (calibration-model.md §1) applied.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationRequest {
    /// Algorithm name → data, in input order (the order of every output row).
    pub va_data: Vec<(String, VaInput)>,
    pub age_group: Option<AgeGroup>,
    pub country: Option<String>,
    pub mmat_type: MmatType,
    /// `None`: true with several algorithms, false with one.
    pub ensemble: Option<bool>,
    pub missmat: Option<Vec<(String, UserMatrix)>>,
    /// Study cause → CHAMPS broad cause, in the order given.
    pub studycause_map: Option<Vec<(String, String)>>,
    /// `None`: `other` for every algorithm. Inner `None`: calibrate every cause.
    pub donotcalib: Option<Vec<(String, Option<Vec<String>>)>>,
    pub donotcalib_type: DonotcalibType,
    pub nocalib_threshold: f64,
    pub path_correction: bool,
    pub pshrink_strength: Option<f64>,
    pub rules: Rules,
    pub mcmc: McmcRequest,
}

impl Default for CalibrationRequest {
    fn default() -> Self {
        CalibrationRequest {
            va_data: Vec::new(),
            age_group: None,
            country: None,
            mmat_type: MmatType::Prior,
            ensemble: None,
            missmat: None,
            studycause_map: None,
            donotcalib: None,
            donotcalib_type: DonotcalibType::Learn,
            nocalib_threshold: 0.1,
            path_correction: true,
            pshrink_strength: None,
            rules: Rules::default(),
            mcmc: McmcRequest::default(),
        }
    }
}

pub(crate) fn check_cause_names(causes: &[String], path: &str) -> Result<(), EngineError> {
    if causes.is_empty() {
        return Err(invalid(path, "must name at least one cause"));
    }
    if causes.len() > MAX_CAUSES {
        return Err(invalid(
            path,
            format!("too many causes: {} (at most {MAX_CAUSES})", causes.len()),
        ));
    }
    for (i, c) in causes.iter().enumerate() {
        if c.is_empty() {
            return Err(invalid(
                format!("{path}[{i}]"),
                "cause names must not be empty",
            ));
        }
        if causes[..i].contains(c) {
            return Err(invalid(path, format!("cause '{c}' is listed twice")));
        }
    }
    Ok(())
}
