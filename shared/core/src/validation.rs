//! Validation of job requests (api-reference §4) on top of the engine's own parsing, and
//! their reduction to count vectors: a stored job is small, and the worker never sees raw
//! uploads. Equal counts and settings give an equal cache key.

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use vacal_engine::data::STORED_ALGORITHMS;
use vacal_engine::prepare::{counts_of, prepare};
use vacal_engine::request::VaInput;
use vacal_engine::{AgeGroup, CalibrationRequest, EngineError, ENGINE_VERSION};

use crate::config::Config;
use crate::request::{parse_request, request_json, unknown_fields};

pub use vacal_contract::FieldError;

/// A refused request (a 422), with every field that was found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    pub errors: Vec<FieldError>,
}

impl ValidationError {
    pub fn single(field: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError {
            errors: vec![FieldError {
                field: field.into(),
                message: message.into(),
            }],
        }
    }

    /// Human-readable, naming the fields.
    pub fn detail(&self) -> String {
        self.errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn prefixed(mut self, prefix: &str) -> Self {
        if !prefix.is_empty() {
            for e in &mut self.errors {
                e.field = format!("{prefix}.{}", e.field);
            }
        }
        self
    }
}

impl From<FieldError> for ValidationError {
    fn from(e: FieldError) -> Self {
        ValidationError { errors: vec![e] }
    }
}

impl From<EngineError> for ValidationError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Invalid { field, message } => ValidationError::single(field, message),
            other => ValidationError::single("body", other.to_string()),
        }
    }
}

/// A request that passed validation, ready to be stored as a job.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidJobRequest {
    /// The engine request with `va_data` reduced to counts and defaults applied.
    pub request: CalibrationRequest,
    /// `request` as JSON (what the worker runs).
    pub request_json: Value,
    pub cache_key: String,
    pub priority: u8,
    pub timeout_minutes: u32,
    pub use_cache: bool,
    pub age_group: Option<String>,
    pub country: Option<String>,
    /// Top-level fields that were ignored (logged as a warning on the job).
    pub ignored_fields: Vec<String>,
}

/// The API's own top-level fields, beyond the engine's.
const API_FIELDS: [&str; 3] = ["priority", "timeout_minutes", "use_cache"];

fn whole(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| {
        v.as_f64()
            .filter(|x| x.fract() == 0.0 && x.abs() < 1e15)
            .map(|x| x as i64)
    })
}

fn int_field(
    body: &Map<String, Value>,
    name: &str,
    default: i64,
    min: i64,
    max: i64,
) -> Result<i64, ValidationError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => match whole(v) {
            Some(n) if (min..=max).contains(&n) => Ok(n),
            Some(_) => Err(ValidationError::single(
                name,
                format!("must be between {min} and {max}"),
            )),
            None => Err(ValidationError::single(name, "must be an integer")),
        },
    }
}

pub(crate) fn record_id_ok(id: &str) -> bool {
    (1..=50).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The API's stricter rules on each data form (§4.2), before the engine reads it.
fn check_api_data_rules(algorithm: &str, data: &Value) -> Result<(), ValidationError> {
    let path = format!("va_data.{algorithm}");
    let Value::Array(items) = data else {
        if let Value::Object(counts) = data {
            if !counts.contains_key("rows") {
                for (cause, n) in counts {
                    if whole(n).is_none_or(|n| n < 0) {
                        return Err(ValidationError::single(
                            format!("{path}.{cause}"),
                            "counts must be non-negative integers",
                        ));
                    }
                }
            }
        }
        return Ok(());
    };
    let mut seen = std::collections::HashSet::new();
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::Object(record) => {
                let id = match record.get("id").or_else(|| record.get("ID")) {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
                    _ => {
                        return Err(ValidationError::single(
                            format!("{path}[{i}].id"),
                            "is required: a string or integer",
                        ))
                    }
                };
                if !record_id_ok(&id) {
                    return Err(ValidationError::single(
                        format!("{path}[{i}].id"),
                        "must be 1-50 characters of letters, digits, '_' or '-'",
                    ));
                }
                if !seen.insert(id.clone()) {
                    return Err(ValidationError::single(
                        format!("{path}[{i}].id"),
                        format!("'{id}' appears more than once"),
                    ));
                }
                let cause = record.get("cause").or_else(|| record.get("cause1"));
                match cause.and_then(Value::as_str) {
                    Some(c) if (1..=100).contains(&c.chars().count()) => {}
                    _ => {
                        return Err(ValidationError::single(
                            format!("{path}[{i}].cause"),
                            "is required: 1-100 characters",
                        ))
                    }
                }
            }
            Value::Array(row)
                if row
                    .iter()
                    .any(|x| whole(x).is_none_or(|x| x != 0 && x != 1)) =>
            {
                return Err(ValidationError::single(
                    format!("{path}[{i}]"),
                    "matrix entries must be 0 or 1",
                ));
            }
            n @ Value::Number(_) if whole(n).is_none_or(|n| n < 0) => {
                return Err(ValidationError::single(
                    format!("{path}[{i}]"),
                    "counts must be non-negative integers",
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Canonical JSON: object keys sorted at every level, no whitespace. Arrays keep their order
/// (algorithm and cause order change the output layout, so they are part of the key).
pub fn canonical_json(v: &Value) -> String {
    // Written straight out, without a sorted copy of the tree (it is on every create).
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut entries: Vec<(&String, &Value)> = m.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                out.push('{');
                for (i, (key, value)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(key).expect("strings serialise"));
                    out.push(':');
                    write(value, out);
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, item) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&serde_json::to_string(scalar).expect("scalars serialise")),
        }
    }
    let mut out = String::with_capacity(512);
    write(v, &mut out);
    out
}

/// SHA-256 of the canonical normalised request and the engine version.
pub fn cache_key(request_json: &Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(ENGINE_VERSION.as_bytes());
    hasher.update(b"\n");
    hasher.update(canonical_json(request_json).as_bytes());
    hex::encode(hasher.finalize())
}

/// The normalised form of a request (`request_json` is its [`request_json`]): va_data as ordered
/// count vectors, algorithm order kept as an array of pairs, ensemble resolved.
fn normalised_json(request: &CalibrationRequest, request_json: &Value) -> Value {
    let mut v = request_json.clone();
    let va: Vec<Value> = request
        .va_data
        .iter()
        .map(|(algorithm, input)| match input {
            VaInput::Counts {
                causes: Some(causes),
                counts,
            } => json!([algorithm, {"causes": causes, "counts": counts}]),
            _ => unreachable!("normalised requests hold named counts"),
        })
        .collect();
    v["va_data_order"] = Value::Array(va);
    v
}

/// Validates a job request body (`prefix` names its place in a batch, e.g. `jobs[2]`).
pub fn validate_job_request(
    body: &Value,
    config: &Config,
    prefix: &str,
) -> Result<ValidJobRequest, ValidationError> {
    let fail = |e: ValidationError| e.prefixed(prefix);
    let Value::Object(obj) = body else {
        return Err(fail(ValidationError::single(
            "body",
            "must be a JSON object",
        )));
    };
    let job = job_fields(obj, config).map_err(fail)?;
    let engine_body = with_api_defaults(obj);
    let has_missmat = engine_body.get("missmat").is_some_and(|m| !m.is_null());
    check_algorithms(&engine_body, has_missmat).map_err(fail)?;
    let parsed = parse_request(&Value::Object(engine_body)).map_err(|e| fail(e.into()))?;
    let normalised = normalise(&parsed, has_missmat, config).map_err(fail)?;
    // Everything deterministic is checked now, so bad input is a 422, not a failed job.
    prepare(&normalised).map_err(|e| fail(e.into()))?;

    let request_json = request_json(&normalised);
    let key = cache_key(&normalised_json(&normalised, &request_json));
    let ignored_fields = unknown_fields(obj, &API_FIELDS)
        .into_iter()
        .map(str::to_string)
        .collect();
    Ok(ValidJobRequest {
        age_group: normalised.age_group.map(|a| a.as_str().to_string()),
        country: normalised.country.clone(),
        request: normalised,
        request_json,
        cache_key: key,
        priority: job.priority,
        timeout_minutes: job.timeout_minutes,
        use_cache: job.use_cache,
        ignored_fields,
    })
}

/// The fields about the job rather than the calibration.
struct JobFields {
    priority: u8,
    timeout_minutes: u32,
    use_cache: bool,
}

fn job_fields(obj: &Map<String, Value>, config: &Config) -> Result<JobFields, ValidationError> {
    let priority = int_field(obj, "priority", 5, 1, 10)? as u8;
    let timeout_minutes = int_field(
        obj,
        "timeout_minutes",
        config.default_timeout_minutes as i64,
        1,
        config.max_timeout_minutes as i64,
    )? as u32;
    let use_cache = match obj.get("use_cache") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ValidationError::single("use_cache", "must be a boolean")),
    };
    Ok(JobFields {
        priority,
        timeout_minutes,
        use_cache,
    })
}

/// The API's age group when a request names none (§4).
pub const DEFAULT_AGE_GROUP: AgeGroup = AgeGroup::Neonate;
/// The API's country when a request names none (§4).
pub const DEFAULT_COUNTRY: &str = "Mozambique";

/// The body with the API's defaults (§4): example data, neonate, Mozambique. An explicit
/// null age group or country means "none" (custom classifiers with their own matrices).
fn with_api_defaults(obj: &Map<String, Value>) -> Map<String, Value> {
    let mut engine_body = obj.clone();
    for (field, default) in [
        ("va_data", json!({"insilicova": "use_example"})),
        ("age_group", json!(DEFAULT_AGE_GROUP.as_str())),
        ("country", json!(DEFAULT_COUNTRY)),
    ] {
        match engine_body.get(field) {
            None => {
                engine_body.insert(field.to_string(), default);
            }
            Some(Value::Null) if field == "va_data" => {
                engine_body.insert(field.to_string(), default);
            }
            _ => {}
        }
    }
    engine_body
}

/// Algorithm names (stored ones unless the request brings its own matrices) and the API's
/// own rules on each algorithm's data.
fn check_algorithms(
    engine_body: &Map<String, Value>,
    has_missmat: bool,
) -> Result<(), ValidationError> {
    let Some(va) = engine_body.get("va_data").and_then(Value::as_object) else {
        return Ok(());
    };
    for (algorithm, data) in va {
        if !has_missmat && !STORED_ALGORITHMS.contains(&algorithm.as_str()) {
            return Err(ValidationError::single(
                format!("va_data.{algorithm}"),
                "unknown algorithm: use eava, insilicova or interva (other names need missmat)",
            ));
        }
        check_api_data_rules(algorithm, data)?;
    }
    Ok(())
}

/// The request as stored: every algorithm's data reduced to counts (in the age group's
/// canonical cause order with the stored matrices), within the deaths limit, and the
/// ensemble flag resolved.
fn normalise(
    parsed: &CalibrationRequest,
    has_missmat: bool,
    config: &Config,
) -> Result<CalibrationRequest, ValidationError> {
    let mut normalised = parsed.clone();
    normalised.va_data.clear();
    for (algorithm, input) in &parsed.va_data {
        let (causes, counts) = counts_of(algorithm, input, parsed.age_group, parsed.rules)?;
        let (causes, counts) = match parsed.age_group {
            Some(age_group) if !has_missmat && parsed.studycause_map.is_none() => {
                canonical_counts(algorithm, age_group, &causes, &counts)?
            }
            _ => (causes, counts),
        };
        check_deaths(algorithm, &counts, config)?;
        normalised.va_data.push((
            algorithm.clone(),
            VaInput::Counts {
                causes: Some(causes),
                counts,
            },
        ));
    }
    normalised.ensemble = Some(normalised.va_data.len() > 1 && parsed.ensemble.unwrap_or(true));
    Ok(normalised)
}

/// With the stored matrices, named counts are broad causes of the age group: any other name
/// is refused, and missing ones count 0 (§4.2), in the canonical order.
fn canonical_counts(
    algorithm: &str,
    age_group: AgeGroup,
    causes: &[String],
    counts: &[f64],
) -> Result<(Vec<String>, Vec<f64>), ValidationError> {
    let canonical = age_group.causes();
    let unknown: Vec<&String> = causes.iter().filter(|c| !canonical.contains(c)).collect();
    if !unknown.is_empty() {
        return Err(ValidationError::single(
            format!("va_data.{algorithm}"),
            format!(
                "unknown cause(s) {} for age group {} (expected {})",
                unknown
                    .iter()
                    .map(|c| format!("'{c}'"))
                    .collect::<Vec<_>>()
                    .join(", "),
                age_group.as_str(),
                canonical.join(", ")
            ),
        ));
    }
    let full: Vec<f64> = canonical
        .iter()
        .map(|c| {
            causes
                .iter()
                .position(|x| x == c)
                .map_or(0.0, |i| counts[i])
        })
        .collect();
    Ok((canonical.to_vec(), full))
}

/// At least one death, at most `max_deaths_per_request`, per algorithm.
fn check_deaths(algorithm: &str, counts: &[f64], config: &Config) -> Result<(), ValidationError> {
    let total: f64 = counts.iter().sum();
    if total < 1.0 {
        return Err(ValidationError::single(
            format!("va_data.{algorithm}"),
            "has no deaths (after dropping Unspecified); at least one is needed",
        ));
    }
    if total > config.max_deaths_per_request as f64 {
        return Err(ValidationError::single(
            format!("va_data.{algorithm}"),
            format!(
                "has {total} deaths; at most {} per algorithm",
                config.max_deaths_per_request
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Core reads the request body by hand (`request`); the contract documents it. A field
    /// one has and the other lacks fails here.
    #[test]
    fn the_contract_documents_exactly_the_fields_the_parser_reads() {
        use std::collections::BTreeSet;
        use utoipa::PartialSchema;
        let schema = serde_json::to_value(vacal_contract::CalibrationJobRequest::schema()).unwrap();
        let documented: BTreeSet<&str> = schema["properties"]
            .as_object()
            .expect("the request schema has properties")
            .keys()
            .map(String::as_str)
            .collect();
        let read: BTreeSet<&str> = crate::request::KNOWN_FIELDS
            .iter()
            .chain(&API_FIELDS)
            .copied()
            .collect();
        assert_eq!(documented, read);
    }

    fn valid(body: Value) -> ValidJobRequest {
        validate_job_request(&body, &Config::default(), "").unwrap()
    }

    fn invalid(body: Value) -> FieldError {
        validate_job_request(&body, &Config::default(), "")
            .unwrap_err()
            .errors
            .remove(0)
    }

    /// Cache keys of stored results depend on this exact form.
    #[test]
    fn canonical_json_sorts_keys_at_every_level_without_whitespace() {
        let v = json!({"b": [1, {"z": null, "a": "x\"y"}], "a": {"d": 1.5, "c": true}, "é": []});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":true,"d":1.5},"b":[1,{"a":"x\"y","z":null}],"é":[]}"#
        );
    }

    #[test]
    fn the_empty_request_is_the_neonatal_insilicova_example() {
        let v = valid(json!({}));
        assert_eq!(v.priority, 5);
        assert_eq!(v.timeout_minutes, 30);
        assert!(!v.use_cache);
        assert_eq!(v.age_group.as_deref(), Some("neonate"));
        assert_eq!(v.country.as_deref(), Some("Mozambique"));
        assert_eq!(
            v.request_json["va_data"]["insilicova"],
            json!({"congenital_malformation": 1.0, "pneumonia": 148.0, "sepsis_meningitis_inf": 363.0,
                   "ipre": 327.0, "other": 62.0, "prematurity": 289.0})
        );
        let explicit = valid(json!({"va_data": {"insilicova": "use_example"}}));
        assert_eq!(v.cache_key, explicit.cache_key);
    }

    #[test]
    fn equal_counts_in_any_form_share_a_cache_key() {
        let counts = valid(json!({"va_data": {"eava": [1, 2, 0, 0, 0, 1]}}));
        // Keys in another order, zeros left out.
        let object = valid(
            json!({"va_data": {"eava": {"prematurity": 1, "pneumonia": 2, "congenital_malformation": 1}}}),
        );
        let records = valid(json!({"va_data": {"eava": [
            {"id": "a", "cause": "Congenital malformation"},
            {"id": "b", "cause": "Neonatal pneumonia"},
            {"id": "c", "cause": "pneumonia"},
            {"id": "d", "cause": "Prematurity"},
            {"id": "e", "cause": "Unspecified"}]}}));
        let matrix = valid(
            json!({"va_data": {"eava": [[1,0,0,0,0,0],[0,1,0,0,0,0],[0,1,0,0,0,0],[0,0,0,0,0,1]]}}),
        );
        assert_eq!(counts.cache_key, object.cache_key);
        assert_eq!(counts.cache_key, records.cache_key);
        assert_eq!(counts.cache_key, matrix.cache_key);
        let other_country =
            valid(json!({"va_data": {"eava": [1, 2, 0, 0, 0, 1]}, "country": "mozambique"}));
        assert_ne!(counts.cache_key, other_country.cache_key);
        let other_priority = valid(
            json!({"va_data": {"eava": [1, 2, 0, 0, 0, 1]}, "priority": 9, "use_cache": true}),
        );
        assert_eq!(counts.cache_key, other_priority.cache_key);
    }

    #[test]
    fn the_rules_are_part_of_the_cache_key_and_default_to_2_3_1() {
        let default = valid(json!({"va_data": {"eava": [1, 2, 0, 0, 0, 1]}}));
        let explicit = valid(json!({"va_data": {"eava": [1, 2, 0, 0, 0, 1]}, "rules": "2.3.1"}));
        let old = valid(json!({"va_data": {"eava": [1, 2, 0, 0, 0, 1]}, "rules": "2.2"}));
        assert_eq!(default.cache_key, explicit.cache_key);
        assert_ne!(default.cache_key, old.cache_key);
        assert_eq!(old.request_json["rules"], "2.2");
    }

    #[test]
    fn ensemble_with_one_algorithm_is_ignored() {
        let a = valid(json!({"ensemble": true}));
        let b = valid(json!({"ensemble": false}));
        assert_eq!(a.cache_key, b.cache_key);
        assert_eq!(a.request.ensemble, Some(false));
    }

    #[test]
    fn each_documented_rule_gives_a_field_error() {
        let cases = [
            (json!({"va_data": {}}), "va_data"),
            (
                json!({"va_data": {"openva": "use_example"}}),
                "va_data.openva",
            ),
            (json!({"age_group": "adult"}), "age_group"),
            (json!({"country": "  "}), "country"),
            (json!({"mmat_type": "samples"}), "missmat"),
            (json!({"priority": 11}), "priority"),
            (json!({"priority": "high"}), "priority"),
            (json!({"timeout_minutes": 121}), "timeout_minutes"),
            (json!({"use_cache": "yes"}), "use_cache"),
            (
                json!({"va_data": {"eava": [{"id": "a b", "cause": "Prematurity"}]}}),
                "va_data.eava[0].id",
            ),
            (
                json!({"va_data": {"eava": [{"id": "a", "cause": "Prematurity"}, {"id": "a", "cause": "Prematurity"}]}}),
                "va_data.eava[1].id",
            ),
            (
                json!({"va_data": {"eava": [{"id": "a"}]}}),
                "va_data.eava[0].cause",
            ),
            (
                json!({"va_data": {"eava": [{"id": "a", "cause": "Unspecified"}]}}),
                "va_data.eava",
            ),
            (
                json!({"va_data": {"eava": [{"id": "a", "cause": "Gout"}]}}),
                "va_data.eava",
            ),
            (
                json!({"va_data": {"eava": [[0, 2, 0, 0, 0, 0]]}}),
                "va_data.eava[0]",
            ),
            (json!({"va_data": {"eava": [1, 2, 3]}}), "va_data.eava"),
            (
                json!({"va_data": {"eava": [1, -2, 3, 0, 0, 0]}}),
                "va_data.eava[1]",
            ),
            (
                json!({"va_data": {"eava": {"pneumonia": 2, "flu": 1}}}),
                "va_data.eava",
            ),
            (
                json!({"va_data": {"eava": [0, 0, 0, 0, 0, 0]}}),
                "va_data.eava",
            ),
            (
                json!({"va_data": {"eava": [10001, 0, 0, 0, 0, 0]}}),
                "va_data.eava",
            ),
            (
                json!({"va_data": {"eava": [{"id": "a", "cause": "Prematurity"}, 3]}}),
                "va_data.eava",
            ),
            (json!({"va_data": {"eava": "example"}}), "va_data.eava"),
        ];
        for (body, field) in cases {
            let e = invalid(body.clone());
            assert_eq!(e.field, field, "{body}: {}", e.message);
            assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn batch_members_name_their_index() {
        let e = validate_job_request(&json!({"age_group": 3}), &Config::default(), "jobs[1]")
            .unwrap_err();
        assert_eq!(e.errors[0].field, "jobs[1].age_group");
    }

    #[test]
    fn unknown_top_level_fields_are_reported() {
        let v = valid(json!({"dataset": "x", "deaths": 3}));
        assert_eq!(v.ignored_fields, vec!["dataset", "deaths"]);
    }
}
