//! vacal-contract: the API's wire format (api-reference.md), request and response bodies,
//! query parameters and errors as types, each defined once, for the OpenAPI document, the
//! domain's enums (job status and type, log level, error details, field errors) and typed
//! clients. No I/O. Core's `JobService` returns these types and the handlers serialise them,
//! so the document describes what is sent. The request body is the exception: core reads it
//! by hand (`vacal_core::request`), and a test pins its fields to those documented here.
//!
//! Fields that are always present but may be `null` are `Option` with `required = true`.

use std::collections::BTreeMap;

use indexmap::IndexMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

mod query;
pub use query::*;

// ---------------------------------------------------------------------------------------
// Shared values
// ---------------------------------------------------------------------------------------

/// The error body of every non-2xx response (api-reference §2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorResponse {
    /// Human-readable, never empty; names the offending field(s) for validation failures.
    #[schema(example = "Job job_abc123456789 not found")]
    pub detail: String,
    /// Equal to the HTTP status of the response.
    #[schema(example = 404)]
    pub status_code: u16,
    /// When the error was produced (RFC 3339, UTC).
    #[schema(format = DateTime, example = "2024-01-15T14:30:00Z")]
    pub timestamp: String,
    /// 422 only: every offending field, as a dotted path (`jobs[1].age_group`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

/// One offending field of a 422.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    #[schema(example = "va_data")]
    pub field: String,
    #[schema(example = "must contain at least one algorithm")]
    pub message: String,
}

/// Job statuses (§6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Pending,
    Running,
    Success,
    Failed,
    Cancelled,
    Timeout,
}

impl JobStatus {
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Pending,
        JobStatus::Running,
        JobStatus::Success,
        JobStatus::Failed,
        JobStatus::Cancelled,
        JobStatus::Timeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Success => "success",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Timeout => "timeout",
        }
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        JobStatus::ALL.into_iter().find(|x| x.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, JobStatus::Pending | JobStatus::Running)
    }

    /// The legal transitions of §6.1: terminal states never change, nothing goes back to
    /// pending.
    pub fn can_become(self, next: JobStatus) -> bool {
        match self {
            JobStatus::Pending => next != JobStatus::Pending,
            JobStatus::Running => !matches!(next, JobStatus::Pending | JobStatus::Running),
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobType {
    Calibration,
    BatchCalibration,
}

impl JobType {
    pub fn as_str(self) -> &'static str {
        match self {
            JobType::Calibration => "calibration",
            JobType::BatchCalibration => "batch_calibration",
        }
    }
}

/// `neonate` (0–27 days) or `child` (1–59 months).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AgeGroup {
    Neonate,
    Child,
}

impl AgeGroup {
    pub fn as_str(self) -> &'static str {
        match self {
            AgeGroup::Neonate => "neonate",
            AgeGroup::Child => "child",
        }
    }
}

/// Ordered by severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    Info,
    Warning,
    Error,
    Critical,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warning => "warning",
            LogLevel::Error => "error",
            LogLevel::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<LogLevel> {
        [
            LogLevel::Debug,
            LogLevel::Info,
            LogLevel::Warning,
            LogLevel::Error,
            LogLevel::Critical,
        ]
        .into_iter()
        .find(|l| l.as_str() == s)
    }
}

// ---------------------------------------------------------------------------------------
// Calibration request (§4)
// ---------------------------------------------------------------------------------------

/// `prior` propagates misclassification uncertainty (Dirichlet prior); `fixed` uses the
/// posterior-mean matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MmatType {
    Prior,
    Fixed,
}

/// The bundled COMSA-Mozambique output of the named algorithm and age group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExampleData {
    UseExample,
}

/// A record ID: a string or an integer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum RecordId {
    Text(String),
    Number(i64),
}

/// One death with its specific cause (openVA `crossVA()` / EAVA `codEAVA()` output).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeathRecord {
    /// 1–50 characters of `[A-Za-z0-9_-]`, unique within the algorithm; `ID` is accepted too.
    #[serde(alias = "ID")]
    pub id: RecordId,
    /// A specific cause known for the age group (matched case-insensitively);
    /// `Unspecified` records are dropped.
    #[schema(example = "Neonatal sepsis")]
    pub cause: String,
}

/// One algorithm's data, in one of the four forms of §4.2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum AlgorithmData {
    /// `"use_example"`.
    Example(ExampleData),
    /// One record per death.
    Records(Vec<DeathRecord>),
    /// One row per death, one 0/1 column per broad cause in canonical order, exactly one 1.
    Matrix(Vec<Vec<u8>>),
    /// Death counts per broad cause, in canonical order.
    Counts(Vec<u64>),
    /// Death counts keyed by broad cause (missing causes count 0).
    CountsByCause(BTreeMap<String, u64>),
}

/// VA data per algorithm: 1–3 of `eava`, `insilicova`, `interva` (`{}` is refused).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VaData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eava: Option<AlgorithmData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insilicova: Option<AlgorithmData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interva: Option<AlgorithmData>,
}

/// Sampler settings (an engine extension; defaults suit production).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct McmcSettings {
    /// Retained draws over all chains (100–1,000,000; default 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_mcmc: Option<u64>,
    /// Warm-up iterations over all chains (default 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_burn: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_thin: Option<u64>,
    /// Chains (1–16; default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_chain: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// `auto`, `nuts` or `gibbs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampler: Option<String>,
}

/// `CalibrationJobRequest` (§4). Every field is optional; `{}` runs the example data
/// (neonate, Mozambique). Unknown top-level fields are ignored with a warning log on the job.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct CalibrationJobRequest {
    /// `null` or absent means `{"insilicova": "use_example"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub va_data: Option<VaData>,
    /// Default `neonate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_group: Option<AgeGroup>,
    /// Free text, 1–100 characters; countries without their own matrices use `other`.
    /// Default `Mozambique`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 100, example = "Mozambique")]
    pub country: Option<String>,
    /// Default `prior`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mmat_type: Option<MmatType>,
    /// Ensemble across algorithms; ignored with a single algorithm. Default `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble: Option<bool>,
    /// 1–10, higher runs earlier (best effort). Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 10)]
    pub priority: Option<u8>,
    /// 1–120 (`MAX_TIMEOUT_MINUTES`); queue time counts. Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 120)]
    pub timeout_minutes: Option<u32>,
    /// Read and write the result cache (§7). Default `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_cache: Option<bool>,
    /// Sampler settings (engine extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcmc: Option<McmcSettings>,
    /// User-supplied misclassification matrices per algorithm (engine extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missmat: Option<Value>,
    /// Study cause → broad cause map (engine extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub studycause_map: Option<Value>,
    /// Causes not to calibrate, per algorithm (engine extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub donotcalib: Option<Value>,
    /// `learn` or `fixed` (engine extension; default `learn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub donotcalib_type: Option<String>,
    /// 0–1 (engine extension; default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nocalib_threshold: Option<f64>,
    /// Engine extension; default `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_correction: Option<bool>,
    /// Engine extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pshrink_strength: Option<f64>,
    /// Whose rules to follow (engine extension; default `2.3.1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Rules>,
}

/// `POST /api/v1/calibrate/async` as `multipart/form-data`: the JSON body as an optional
/// `request` part (its `va_data` may be absent) and one CSV or TSV file per algorithm, in long
/// (`ID`, `cause` or `cause1`), wide (`ID` and broad-cause columns of 0/1) or counts (`cause`,
/// `deaths` or `count`) form, detected from the header.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct CalibrationUpload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<CalibrationJobRequest>,
    #[serde(
        rename = "va_data.eava",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = Binary)]
    pub va_data_eava: Option<String>,
    #[serde(
        rename = "va_data.insilicova",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = Binary)]
    pub va_data_insilicova: Option<String>,
    #[serde(
        rename = "va_data.interva",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = Binary)]
    pub va_data_interva: Option<String>,
}

/// What `POST /api/v1/validate` found about one algorithm's data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlgorithmPreview {
    /// `long`, `wide` or `counts` for a file; `json` for data in the JSON body.
    pub form: String,
    /// Deaths counted (after dropping `Unspecified`).
    pub deaths: Amount,
    /// Rows of a long file labelled `Unspecified`, dropped as cause_map does.
    pub unspecified_dropped: u64,
    /// Deaths per broad cause, in the result's cause order.
    pub counts: IndexMap<String, Amount>,
    /// Whether this algorithm will be calibrated (at least 2 causes to calibrate).
    pub calibrated: bool,
    /// Causes that will not be calibrated, with the reason: `donotcalib`, `zero deaths`,
    /// `uncalibrated CSMF outside [0.01, 0.99] (2.3.1 rule)` or `learn screen (the
    /// misclassification rates barely differ)`.
    pub not_calibrated: IndexMap<String, String>,
}

/// `POST /api/v1/validate` → 200: what a calibration of this request would start from,
/// without running it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ValidationPreview {
    /// True when the request would be accepted.
    pub valid: bool,
    /// Why it would not be (a file's errors name its line and column).
    pub errors: Vec<FieldError>,
    /// Per algorithm whose data could be read.
    pub algorithms: IndexMap<String, AlgorithmPreview>,
    /// The settings the run would use, defaults resolved; null when invalid.
    #[schema(required = true)]
    pub settings: Option<Value>,
    /// What a run would warn about before sampling.
    pub warnings: Vec<String>,
}

/// The vacalibration release whose rules a calibration follows. `2.3.1` (the author's current
/// release) also leaves out of the `learn` screen causes with an uncalibrated CSMF below 0.01
/// or above 0.99, and maps labels that are all broad causes directly; `2.2` (CRAN) replays
/// runs of that release exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Rules {
    #[serde(rename = "2.3.1")]
    V2_3_1,
    #[serde(rename = "2.2")]
    V2_2,
}

// ---------------------------------------------------------------------------------------
// Jobs (§5)
// ---------------------------------------------------------------------------------------

/// `POST /api/v1/calibrate/async` → 200.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobCreatedResponse {
    #[schema(example = "job_3f9a0c1b2d4e")]
    pub job_id: String,
    /// Always `created` (the job itself starts as `pending`).
    #[schema(example = "created")]
    pub status: String,
}

/// `JobProgress` (§5.3, §6.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobProgress {
    pub current_step: u32,
    /// Always 5.
    pub total_steps: u32,
    #[schema(example = "Running R calibration")]
    pub step_name: String,
    /// `current_step / total_steps × 100`.
    pub progress_percentage: f64,
    #[schema(required = true, format = DateTime)]
    pub estimated_completion: Option<String>,
}

/// `JobMetadata` (§5.3), with the additive `batch_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobMetadata {
    pub job_id: String,
    pub job_type: JobType,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Null until a worker picks the job up.
    #[schema(required = true, format = DateTime)]
    pub started_at: Option<String>,
    /// Null until the job is terminal.
    #[schema(required = true, format = DateTime)]
    pub completed_at: Option<String>,
    /// `created_at + timeout_minutes`.
    #[schema(format = DateTime)]
    pub timeout_at: String,
    #[schema(minimum = 1, maximum = 10)]
    pub priority: u8,
    pub retry_count: u32,
    pub max_retries: u32,
    /// The batch of a batch member, else null.
    #[schema(required = true)]
    pub batch_id: Option<String>,
}

/// `JobLogEntry` (§6.4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobLogEntry {
    #[schema(format = DateTime)]
    pub timestamp: String,
    pub level: LogLevel,
    pub message: String,
    #[schema(required = true)]
    pub component: Option<String>,
    #[schema(required = true)]
    pub data: Option<Value>,
}

/// Present when the job succeeded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResultSummary {
    /// Keys of `result.calibrated`, `ensemble` included; null if the stored result cannot
    /// be read.
    #[schema(required = true)]
    pub algorithms_processed: Option<u32>,
    #[schema(required = true)]
    pub age_group: Option<String>,
    #[schema(required = true)]
    pub country: Option<String>,
    #[schema(required = true, format = DateTime)]
    pub completion_time: Option<String>,
}

/// Present when the job failed or timed out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetails {
    #[schema(example = "Timeout")]
    pub error_type: String,
    pub error_message: String,
    #[schema(required = true)]
    pub traceback: Option<String>,
}

/// `JobStatusResponse` (§5.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobStatusResponse {
    pub job_id: String,
    pub status: JobStatus,
    #[schema(required = true)]
    pub progress: Option<JobProgress>,
    pub metadata: JobMetadata,
    /// Newest first, filtered by `log_level`, then paged.
    pub logs: Vec<JobLogEntry>,
    #[schema(required = true)]
    pub result_summary: Option<ResultSummary>,
    #[schema(required = true)]
    pub error_details: Option<ErrorDetails>,
}

/// Where a cached result came from (§7.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CacheInfo {
    #[schema(format = DateTime)]
    pub cached_at: String,
    pub source_job_id: String,
}

/// A number written as an integer when it is whole (death counts), else as a float.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = f64)]
pub struct Amount(pub f64);

impl Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0.fract() == 0.0 && self.0.abs() < 9.0e15 {
            serializer.serialize_i64(self.0 as i64)
        } else {
            serializer.serialize_f64(self.0)
        }
    }
}

/// Posterior summary of one algorithm (or the ensemble), one value per cause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CalibratedEstimate {
    /// Posterior mean; sums to 1.
    pub mean: Vec<f64>,
    /// 2.5 % posterior quantile.
    pub lower_ci: Vec<f64>,
    /// 97.5 % posterior quantile.
    pub upper_ci: Vec<f64>,
}

/// CSMFs as percentages per row, one value per cause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Percentages {
    pub uncalibrated: IndexMap<String, Vec<Amount>>,
    pub calibrated: IndexMap<String, Vec<Amount>>,
}

/// Convergence diagnostics of one MCMC fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FitDiagnostics {
    /// `nuts`, `gibbs`, `independence`, or `tempering` (parallel tempering, run when the
    /// chains found different modes).
    pub sampler: String,
    /// Largest rank-normalised split R-hat over the calibrated causes; null when too few
    /// draws per chain to compute it.
    #[schema(required = true)]
    pub max_rhat: Option<f64>,
    /// Smallest bulk effective sample size over the calibrated causes; null as above.
    #[schema(required = true)]
    pub min_ess_bulk: Option<f64>,
    /// Divergent transitions after warm-up (NUTS).
    pub divergences: u64,
    /// Iterations that hit the maximum tree depth (NUTS).
    pub max_treedepth_hits: u64,
    /// Retained draws over all chains.
    pub draws: u64,
    pub seconds: f64,
    /// Causes whose posterior has several modes: the usual sampler's chains disagreed on them
    /// and parallel tempering was run (`sampler` says whose draws are reported). Empty when
    /// the chains agreed; results stored before this field have none.
    #[serde(default)]
    pub multimodal_causes: Vec<String>,
}

/// A map from row to `schema` or null (utoipa cannot derive a nullable map value).
fn nullable_by_row(schema: &str) -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
    use utoipa::openapi::Ref;
    let nullable = OneOfBuilder::new()
        .item(Ref::from_schema_name(schema))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .build();
    ObjectBuilder::new()
        .additional_properties(Some(Schema::OneOf(nullable)))
        .build()
}

fn diagnostics_by_row() -> utoipa::openapi::schema::Object {
    nullable_by_row("FitDiagnostics")
}

fn path_correction_by_algorithm() -> utoipa::openapi::schema::Object {
    nullable_by_row("PathCorrection")
}

/// What a calibration gives (§5.5, with the engine's extensions), in the order the fields are
/// written; the result store keeps it and `vacal calibrate` prints it. Maps keyed by row
/// follow the order of the rows: the algorithms in input order, then `ensemble` when it ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CalibrationOutput {
    /// `success`.
    pub status: String,
    /// Canonical broad-cause order labelling every array below.
    pub causes: Vec<String>,
    /// Uncalibrated CSMF per row.
    pub uncalibrated: IndexMap<String, Vec<f64>>,
    /// Calibrated CSMF per row.
    pub calibrated: IndexMap<String, CalibratedEstimate>,
    /// The path-correction weight λ per algorithm (0 without path correction); null where the
    /// algorithm was not calibrated.
    pub lambda: IndexMap<String, Option<f64>>,
    /// Per algorithm, what the path correction did; null where none ran (the algorithm was not
    /// calibrated, or `path_correction` is false). Results stored before this field have `{}`.
    #[serde(default)]
    #[schema(schema_with = path_correction_by_algorithm)]
    pub path_correction: IndexMap<String, Option<PathCorrection>>,
    /// Per row and cause: whether the cause was calibrated (not excluded by donotcalib or
    /// the screening).
    pub calibrated_causes: IndexMap<String, Vec<bool>>,
    /// Deaths per cause per algorithm, as given.
    pub uncalibrated_deaths: IndexMap<String, Vec<Amount>>,
    /// Deaths per cause per algorithm, redistributed by its calibrated CSMF.
    pub calibrated_deaths: IndexMap<String, Vec<Amount>>,
    /// Deaths per cause per algorithm, redistributed by the ensemble CSMF; null without an
    /// ensemble.
    #[schema(required = true)]
    pub calibrated_deaths_ensemble: Option<IndexMap<String, Vec<Amount>>>,
    pub percentages: Percentages,
    /// Per row: its `FitDiagnostics`, or null for a row that was not calibrated by MCMC.
    #[schema(schema_with = diagnostics_by_row)]
    pub diagnostics: IndexMap<String, Option<FitDiagnostics>>,
    /// Why a fit should not be trusted, one sentence each, prefixed with its row; empty when
    /// every fit looks converged. Also logged on the job as warnings.
    pub warnings: Vec<String>,
    /// The settings the run used, defaults resolved.
    pub settings: Value,
    pub engine_version: String,
}

/// The path correction of one algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PathCorrection {
    pub lambda: f64,
    /// λ stayed at the top of its grid (0.99, or 1 for `fixed`): the matrix the model used is
    /// almost the identity, so the calibrated CSMF is about the uncalibrated one and its
    /// interval too narrow. A warning says why and what to do.
    pub stalled: bool,
}

/// The result of a successful job: the calibration's output, then the job's setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CalibrationSuccess {
    #[serde(flatten)]
    pub output: CalibrationOutput,
    /// The job's age group (null for custom classifiers with their own matrices).
    #[serde(default)]
    #[schema(required = true)]
    pub age_group: Option<String>,
    #[serde(default)]
    #[schema(required = true)]
    pub country: Option<String>,
    #[serde(default)]
    #[schema(required = true, format = DateTime)]
    pub completed_at: Option<String>,
    /// Copy of the top-level `cache_info` on cache hits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_info: Option<CacheInfo>,
}

/// The result of a failed or timed-out job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CalibrationFailure {
    /// `failed` or `timeout`.
    pub status: String,
    pub error: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum CalibrationResult {
    // Boxed: a success result is much larger than a failure.
    Success(Box<CalibrationSuccess>),
    Failure(CalibrationFailure),
}

/// `JobResultResponse` (§5.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobResultResponse {
    pub job_id: String,
    /// `success`, `failed` or `timeout`.
    pub status: JobStatus,
    pub result: CalibrationResult,
    pub metadata: JobMetadata,
    /// Null unless the result came from the cache.
    #[schema(required = true)]
    pub cache_info: Option<CacheInfo>,
}

/// `DELETE /api/v1/calibrate/{job_id}` → 200.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CancelResponse {
    pub job_id: String,
    /// `cancelled`.
    pub status: String,
}

// ---------------------------------------------------------------------------------------
// Batches (§8)
// ---------------------------------------------------------------------------------------

/// `POST /api/v1/calibrate/batch`. Validation is all or nothing.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct BatchRequest {
    /// 1 … `BATCH_MAX_SIZE` (50) requests.
    #[schema(min_items = 1, max_items = 50)]
    pub jobs: Vec<CalibrationJobRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 200)]
    pub batch_name: Option<String>,
    /// At most this many members run at once (1–10; default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 10)]
    pub parallel_limit: Option<u32>,
    /// Cancel the remaining members when one fails or times out. Default `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_fast: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchMetadata {
    pub batch_id: String,
    #[schema(required = true)]
    pub batch_name: Option<String>,
    pub total_jobs: u32,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub parallel_limit: u32,
    pub fail_fast: bool,
}

/// `POST /api/v1/calibrate/batch` → 200.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchCreatedResponse {
    #[schema(example = "batch_def987654321")]
    pub batch_id: String,
    /// In the order of `jobs`.
    pub job_ids: Vec<String>,
    pub batch_metadata: BatchMetadata,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BatchStatus {
    Pending,
    Running,
    Completed,
    Partial,
    Failed,
    Cancelled,
}

impl BatchStatus {
    /// The overall status of a batch (§8.2), from its members' statuses.
    pub fn of(fail_fast: bool, statuses: &[JobStatus]) -> BatchStatus {
        use JobStatus::*;
        let all = |s: JobStatus| statuses.iter().all(|x| *x == s);
        if all(Success) {
            BatchStatus::Completed
        } else if fail_fast && statuses.iter().any(|s| matches!(s, Failed | Timeout)) {
            BatchStatus::Failed
        } else if all(Cancelled) {
            BatchStatus::Cancelled
        } else if all(Pending) {
            BatchStatus::Pending
        } else if statuses.iter().any(|s| !s.is_terminal()) {
            BatchStatus::Running
        } else if statuses.contains(&Success) {
            BatchStatus::Partial
        } else {
            BatchStatus::Failed
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchMemberStatus {
    pub job_id: String,
    pub status: JobStatus,
}

/// `GET /api/v1/calibrate/batch/{batch_id}/status` (§8.2). The five counts sum to
/// `total_jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchStatusResponse {
    pub batch_id: String,
    #[schema(required = true)]
    pub batch_name: Option<String>,
    pub total_jobs: u32,
    /// Members in `success`.
    pub completed_jobs: u32,
    /// Members in `failed` or `timeout`.
    pub failed_jobs: u32,
    pub running_jobs: u32,
    pub pending_jobs: u32,
    pub cancelled_jobs: u32,
    pub batch_status: BatchStatus,
    /// In creation order.
    pub job_statuses: Vec<BatchMemberStatus>,
}

// ---------------------------------------------------------------------------------------
// Listing (§9), cache (§7), health and metrics (§10), extras (§5.1)
// ---------------------------------------------------------------------------------------

/// A `JobMetadata` with the job's status, age group and country (after the metadata's fields
/// on the wire).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobListItem {
    #[serde(flatten)]
    pub metadata: JobMetadata,
    pub status: JobStatus,
    #[schema(required = true)]
    pub age_group: Option<String>,
    #[schema(required = true)]
    pub country: Option<String>,
}

/// `GET /api/v1/jobs` → 200. Newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobListResponse {
    pub jobs: Vec<JobListItem>,
    /// Jobs matching the filters, over all pages.
    pub total_count: u64,
    pub page: u64,
    pub page_size: u64,
    /// `page × page_size < total_count`.
    pub has_next: bool,
}

/// `GET /api/v1/cache/stats` (§7.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CacheStatsResponse {
    /// Live entries.
    pub total_cached_results: u64,
    /// Hits / look-ups × 100; 0.0 when there were none.
    pub cache_hit_rate: f64,
    /// MiB, 2 decimals.
    pub total_cache_size_mb: f64,
    #[schema(required = true, format = DateTime)]
    pub oldest_cached_result: Option<String>,
    #[schema(required = true, format = DateTime)]
    pub newest_cached_result: Option<String>,
}

/// `DELETE /api/v1/cache/clear` → 200.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CacheClearResponse {
    pub cleared_results: u64,
    #[schema(example = "Cleared 3 cached results")]
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QueueStats {
    /// Jobs currently `pending`.
    pub pending_jobs: u64,
    /// Jobs currently `running`.
    pub running_jobs: u64,
    /// Same number as `cache/stats.total_cached_results`.
    pub cached_results: u64,
    /// Messages waiting or in flight; null when the queue could not tell.
    #[schema(required = true)]
    pub queue_depth: Option<u64>,
}

/// `GET /api/v1/jobs/health` → 200 (§10.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HealthResponse {
    /// `healthy` or `degraded`.
    #[schema(example = "healthy")]
    pub status: String,
    /// Storage health (name kept for compatibility): `healthy` | `unhealthy`.
    pub redis: String,
    /// Execution health (name kept for compatibility): `healthy` | `no_workers` | `unhealthy`.
    pub celery: String,
    /// `healthy` (a 200 means storage answered).
    pub storage: String,
    /// Same as `celery`.
    pub worker: String,
    pub queue_stats: QueueStats,
    #[schema(format = DateTime)]
    pub timestamp: String,
}

/// `GET /api/v1/jobs/health` → 503: storage cannot be reached. The error-body fields are
/// added to the original's `{status, error, timestamp}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HealthUnavailableResponse {
    pub detail: String,
    pub status_code: u16,
    #[schema(format = DateTime)]
    pub timestamp: String,
    /// `unhealthy`.
    pub status: String,
    pub error: String,
}

/// `GET /api/v1/jobs/metrics` → 200 (§10.2), over jobs created in the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricsResponse {
    #[schema(example = "24h")]
    pub time_range: TimeRange,
    pub total_jobs: u64,
    /// Percent of finished jobs that succeeded.
    pub success_rate: f64,
    /// Percent of finished jobs that failed or timed out.
    pub error_rate: f64,
    pub average_duration_seconds: f64,
    pub cache_hit_rate: f64,
    /// Jobs per status (additive).
    pub status_counts: StatusCounts,
}

/// Jobs per status, in the order of §6.1.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub struct StatusCounts {
    pub pending: u64,
    pub running: u64,
    pub success: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub timeout: u64,
}

impl StatusCounts {
    pub fn of(statuses: impl IntoIterator<Item = JobStatus>) -> StatusCounts {
        let mut counts = StatusCounts::default();
        for s in statuses {
            *match s {
                JobStatus::Pending => &mut counts.pending,
                JobStatus::Running => &mut counts.running,
                JobStatus::Success => &mut counts.success,
                JobStatus::Failed => &mut counts.failed,
                JobStatus::Cancelled => &mut counts.cancelled,
                JobStatus::Timeout => &mut counts.timeout,
            } += 1;
        }
        counts
    }
}

/// `DELETE /api/v1/jobs/{job_id}` → 200.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeleteJobResponse {
    pub job_id: String,
    /// `deleted`.
    pub status: String,
    pub deleted_keys: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FailedDeletion {
    pub job_id: String,
    pub error: String,
}

/// `DELETE /api/v1/jobs/clear/all` → 200.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BulkDeleteResponse {
    pub deleted_count: u64,
    pub failed_count: u64,
    pub deleted_jobs: Vec<String>,
    /// Null when nothing failed.
    #[schema(required = true)]
    pub failed_jobs: Option<Vec<FailedDeletion>>,
}

/// `POST /api/v1/jobs/retry/{job_id}` → 200.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RetryResponse {
    /// The new job.
    pub job_id: String,
    /// `created`.
    pub status: String,
    pub original_job_id: String,
}

// ---------------------------------------------------------------------------------------
// Reference data
// ---------------------------------------------------------------------------------------

/// An age group and its broad causes, in the order of every result's arrays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgeGroupReference {
    pub age_group: AgeGroup,
    pub causes: Vec<String>,
}

/// The defaults a request gets for the fields it leaves out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RequestDefaults {
    pub age_group: AgeGroup,
    pub country: String,
    pub mmat_type: MmatType,
    pub rules: Rules,
    pub donotcalib: Vec<String>,
    pub donotcalib_type: String,
    pub nocalib_threshold: f64,
    pub path_correction: bool,
    pub n_mcmc: u64,
    pub n_burn: u64,
    pub n_thin: u64,
    pub n_chain: u64,
    pub seed: u64,
    pub sampler: String,
}

/// `GET /api/v1/reference` → 200: what a request can name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReferenceResponse {
    pub age_groups: Vec<AgeGroupReference>,
    /// Algorithms with stored CHAMPS matrices (others need `missmat`).
    pub algorithms: Vec<String>,
    /// Countries with their own CHAMPS matrices; any other country uses `other`.
    pub countries: Vec<String>,
    pub matrix_types: Vec<MmatType>,
    pub rules: Vec<Rules>,
    pub defaults: RequestDefaults,
}

/// `GET /api/v1/reference/cause-map/{age_group}` → 200: how CCVA labels map to broad causes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CauseMapResponse {
    pub age_group: AgeGroup,
    /// The broad causes, in order.
    pub causes: Vec<String>,
    /// Specific label (lower case; labels match case-insensitively) → broad cause, sorted by
    /// label. `Unspecified` deaths are dropped.
    pub labels: IndexMap<String, String>,
    /// Labels that only the 2.3.1 rules know, with their broad cause. Under 2.3.1, labels that
    /// are all broad causes are also taken as they are.
    pub labels_2_3_1: IndexMap<String, String>,
}

/// `GET /` → 200: public service information.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ServiceInfo {
    #[schema(example = "vacal")]
    pub name: String,
    /// Version of the service.
    pub version: String,
    /// Version of the calibration engine (part of every cache key).
    pub engine_version: String,
    /// `running`: the process answers (job-system health is `/api/v1/jobs/health`).
    pub status: String,
    /// Where the OpenAPI document is.
    pub docs: String,
    /// Where the job-system health check is.
    pub health: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobStatus::*;

    #[test]
    fn batch_status_follows_the_documented_order() {
        assert_eq!(
            BatchStatus::of(false, &[Success, Success]),
            BatchStatus::Completed
        );
        assert_eq!(
            BatchStatus::of(true, &[Failed, Running]),
            BatchStatus::Failed
        );
        assert_eq!(
            BatchStatus::of(false, &[Failed, Running]),
            BatchStatus::Running
        );
        assert_eq!(
            BatchStatus::of(false, &[Cancelled, Cancelled]),
            BatchStatus::Cancelled
        );
        assert_eq!(
            BatchStatus::of(false, &[Pending, Pending]),
            BatchStatus::Pending
        );
        assert_eq!(
            BatchStatus::of(false, &[Success, Timeout]),
            BatchStatus::Partial
        );
        assert_eq!(
            BatchStatus::of(false, &[Failed, Cancelled]),
            BatchStatus::Failed
        );
    }

    #[test]
    fn terminal_statuses_never_change_and_nothing_returns_to_pending() {
        for s in JobStatus::ALL {
            assert_eq!(JobStatus::parse(s.as_str()), Some(s));
            assert!(!s.can_become(Pending), "{s:?}");
            if s.is_terminal() {
                assert!(JobStatus::ALL.iter().all(|n| !s.can_become(*n)), "{s:?}");
            }
        }
        assert!(Pending.can_become(Running) && Running.can_become(Success));
        assert!(!Running.can_become(Running));
    }
}
