//! The JSON form of a calibration request: the body of `POST /api/v1/calibrate/async` with
//! the engine's extensions, read by hand so that every refusal names the offending field, and
//! written back (the stored job and the cache key use it). The engine itself takes the typed
//! `CalibrationRequest`.

use serde_json::{json, Map, Value};
use vacal_engine::request::{
    CalibrationRequest, CcvaRecord, DonotcalibType, McmcRequest, MmatType, Rules, SamplerKind,
    UserMatrix, VaInput, MAX_ALGORITHMS, MAX_TOTAL_ITERATIONS,
};
use vacal_engine::{AgeGroup, EngineError};

/// The top-level fields this parser understands; others are reported by `unknown_fields`.
pub const KNOWN_FIELDS: [&str; 14] = [
    "va_data",
    "age_group",
    "country",
    "mmat_type",
    "ensemble",
    "missmat",
    "studycause_map",
    "donotcalib",
    "donotcalib_type",
    "nocalib_threshold",
    "path_correction",
    "pshrink_strength",
    "rules",
    "mcmc",
];

/// Top-level keys of `body` that [`parse_request`] ignores.
pub fn unknown_fields<'a>(body: &'a Map<String, Value>, also_known: &[&str]) -> Vec<&'a str> {
    body.keys()
        .map(String::as_str)
        .filter(|k| !KNOWN_FIELDS.contains(k) && !also_known.contains(k))
        .collect()
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> EngineError {
    EngineError::invalid(field, message)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A present, non-null field.
fn field<'a>(body: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    body.get(name).filter(|v| !v.is_null())
}

fn as_string(v: &Value, path: &str) -> Result<String, EngineError> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| invalid(path, format!("must be a string, got {}", type_name(v))))
}

fn as_bool(v: &Value, path: &str) -> Result<bool, EngineError> {
    v.as_bool()
        .ok_or_else(|| invalid(path, format!("must be a boolean, got {}", type_name(v))))
}

fn as_finite(v: &Value, path: &str) -> Result<f64, EngineError> {
    match v.as_f64() {
        Some(x) if x.is_finite() => Ok(x),
        Some(_) => Err(invalid(path, "must be a finite number")),
        None => Err(invalid(
            path,
            format!("must be a number, got {}", type_name(v)),
        )),
    }
}

/// A whole number in `[min, max]`; integral floats such as `5.0` are accepted.
fn as_whole(v: &Value, path: &str, min: u64, max: u64) -> Result<u64, EngineError> {
    let n = match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|x| x.fract() == 0.0 && *x >= 0.0)
                .map(|x| x as u64)
        }),
        _ => None,
    };
    match n {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(invalid(
            path,
            format!("must be a whole number from {min} to {max}"),
        )),
    }
}

fn as_object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, EngineError> {
    v.as_object()
        .ok_or_else(|| invalid(path, format!("must be an object, got {}", type_name(v))))
}

fn as_array<'a>(v: &'a Value, path: &str) -> Result<&'a Vec<Value>, EngineError> {
    v.as_array()
        .ok_or_else(|| invalid(path, format!("must be an array, got {}", type_name(v))))
}

fn string_list(v: &Value, path: &str) -> Result<Vec<String>, EngineError> {
    as_array(v, path)?
        .iter()
        .enumerate()
        .map(|(i, s)| as_string(s, &format!("{path}[{i}]")))
        .collect()
}

fn number_row(v: &Value, path: &str) -> Result<Vec<f64>, EngineError> {
    as_array(v, path)?
        .iter()
        .enumerate()
        .map(|(i, x)| as_finite(x, &format!("{path}[{i}]")))
        .collect()
}

fn number_matrix(v: &Value, path: &str) -> Result<Vec<Vec<f64>>, EngineError> {
    as_array(v, path)?
        .iter()
        .enumerate()
        .map(|(i, row)| number_row(row, &format!("{path}[{i}]")))
        .collect()
}

fn parse_record(v: &Value, path: &str) -> Result<CcvaRecord, EngineError> {
    let obj = as_object(v, path)?;
    let id = match obj.get("ID").or_else(|| obj.get("id")) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(invalid(
                format!("{path}.ID"),
                format!("must be a string or a number, got {}", type_name(other)),
            ))
        }
        None => return Err(invalid(path, "a record needs an `ID` (or `id`)")),
    };
    let cause = match obj.get("cause").or_else(|| obj.get("cause1")) {
        Some(v) => as_string(v, &format!("{path}.cause"))?,
        None => return Err(invalid(path, "a record needs a `cause` (or `cause1`)")),
    };
    Ok(CcvaRecord { id, cause })
}

fn parse_va_input(v: &Value, path: &str) -> Result<VaInput, EngineError> {
    match v {
        Value::String(s) if s == "use_example" => Ok(VaInput::Example),
        Value::String(s) => Err(invalid(
            path,
            format!("the only accepted string is \"use_example\", got \"{s}\""),
        )),
        Value::Array(items) => {
            let Some(first) = items.first() else {
                return Err(invalid(path, "must not be empty"));
            };
            let mixed = |kind: &str| {
                invalid(
                    path,
                    format!("mixes {kind} with other kinds of elements; use one form"),
                )
            };
            match first {
                Value::Object(_) => {
                    if !items.iter().all(Value::is_object) {
                        return Err(mixed("records"));
                    }
                    let records = items
                        .iter()
                        .enumerate()
                        .map(|(i, r)| parse_record(r, &format!("{path}[{i}]")))
                        .collect::<Result<_, _>>()?;
                    Ok(VaInput::Records(records))
                }
                Value::Array(_) => {
                    if !items.iter().all(Value::is_array) {
                        return Err(mixed("matrix rows"));
                    }
                    Ok(VaInput::Indicator {
                        causes: None,
                        rows: number_matrix(v, path)?,
                    })
                }
                Value::Number(_) => {
                    if !items.iter().all(Value::is_number) {
                        return Err(mixed("counts"));
                    }
                    Ok(VaInput::Counts {
                        causes: None,
                        counts: number_row(v, path)?,
                    })
                }
                other => Err(invalid(
                    path,
                    format!(
                        "array elements must be records, matrix rows or counts, got {}",
                        type_name(other)
                    ),
                )),
            }
        }
        Value::Object(obj) if obj.contains_key("rows") => {
            let causes = string_list(
                obj.get("causes")
                    .ok_or_else(|| invalid(path, "an indicator matrix needs `causes`"))?,
                &format!("{path}.causes"),
            )?;
            let rows = number_matrix(&obj["rows"], &format!("{path}.rows"))?;
            Ok(VaInput::Indicator {
                causes: Some(causes),
                rows,
            })
        }
        Value::Object(obj) => {
            let mut causes = Vec::with_capacity(obj.len());
            let mut counts = Vec::with_capacity(obj.len());
            for (cause, n) in obj {
                causes.push(cause.clone());
                counts.push(as_finite(n, &format!("{path}.{cause}"))?);
            }
            Ok(VaInput::Counts {
                causes: Some(causes),
                counts,
            })
        }
        other => Err(invalid(
            path,
            format!(
                "must be \"use_example\", an array or an object, got {}",
                type_name(other)
            ),
        )),
    }
}

/// A matrix given as `[[...]]` with `causes`, or as `{row: {col: value}}`.
fn parse_named_matrix(
    v: &Value,
    causes: Option<Vec<String>>,
    path: &str,
) -> Result<(Vec<String>, Vec<Vec<f64>>), EngineError> {
    match (v, causes) {
        (Value::Array(_), Some(causes)) => Ok((causes, number_matrix(v, path)?)),
        (Value::Array(_), None) => Err(invalid(path, "a matrix given as rows needs `causes`")),
        (Value::Object(rows), _) => {
            let causes: Vec<String> = rows.keys().cloned().collect();
            let mut values = Vec::with_capacity(rows.len());
            for (row_name, row) in rows {
                let row_path = format!("{path}.{row_name}");
                let cols = as_object(row, &row_path)?;
                let names: Vec<&String> = cols.keys().collect();
                if names.len() != causes.len() || names.iter().zip(&causes).any(|(a, b)| *a != b) {
                    return Err(invalid(
                        row_path,
                        "every row must name the same causes as the rows, in the same order",
                    ));
                }
                values.push(
                    cols.iter()
                        .map(|(c, x)| as_finite(x, &format!("{row_path}.{c}")))
                        .collect::<Result<_, _>>()?,
                );
            }
            Ok((causes, values))
        }
        (other, _) => Err(invalid(
            path,
            format!(
                "must be an array of rows or an object, got {}",
                type_name(other)
            ),
        )),
    }
}

fn parse_user_matrix(v: &Value, path: &str) -> Result<UserMatrix, EngineError> {
    let obj = as_object(v, path)?;
    let causes = field(obj, "causes")
        .map(|c| string_list(c, &format!("{path}.causes")))
        .transpose()?;
    if let Some(samples) = field(obj, "samples") {
        let causes =
            causes.ok_or_else(|| invalid(path, "samples need `causes` naming rows and columns"))?;
        let spath = format!("{path}.samples");
        let samples = as_array(samples, &spath)?
            .iter()
            .enumerate()
            .map(|(s, m)| number_matrix(m, &format!("{spath}[{s}]")))
            .collect::<Result<_, _>>()?;
        return Ok(UserMatrix::Samples { causes, samples });
    }
    let matrix = field(obj, "matrix")
        .ok_or_else(|| invalid(path, "needs `matrix` (prior, fixed) or `samples`"))?;
    let (causes, values) = parse_named_matrix(matrix, causes, &format!("{path}.matrix"))?;
    Ok(UserMatrix::Matrix { causes, values })
}

fn parse_mcmc(v: &Value) -> Result<McmcRequest, EngineError> {
    let obj = as_object(v, "mcmc")?;
    let mut m = McmcRequest::default();
    if let Some(x) = field(obj, "n_mcmc") {
        m.n_mcmc = as_whole(x, "mcmc.n_mcmc", 100, 1_000_000)?;
    }
    if let Some(x) = field(obj, "n_burn") {
        m.n_burn = as_whole(x, "mcmc.n_burn", 0, 5_000_000)?;
    }
    if let Some(x) = field(obj, "n_thin") {
        m.n_thin = as_whole(x, "mcmc.n_thin", 1, 10_000)?;
    }
    if let Some(x) = field(obj, "n_chain") {
        m.n_chain = as_whole(x, "mcmc.n_chain", 1, 16)?;
    }
    if let Some(x) = field(obj, "seed") {
        m.seed = as_whole(x, "mcmc.seed", 0, u32::MAX as u64)?;
    }
    if let Some(x) = field(obj, "sampler") {
        m.sampler = match as_string(x, "mcmc.sampler")?.as_str() {
            "auto" => SamplerKind::Auto,
            "nuts" => SamplerKind::Nuts,
            "gibbs" => SamplerKind::Gibbs,
            other => {
                return Err(invalid(
                    "mcmc.sampler",
                    format!("must be \"auto\", \"nuts\" or \"gibbs\", got \"{other}\""),
                ))
            }
        };
    }
    if m.n_chain > m.n_mcmc {
        return Err(invalid("mcmc.n_chain", "must not exceed mcmc.n_mcmc"));
    }
    let total = m.n_burn + m.n_mcmc * m.n_thin;
    if total > MAX_TOTAL_ITERATIONS {
        return Err(invalid(
            "mcmc",
            format!(
                "n_burn + n_mcmc × n_thin = {total} iterations; at most {MAX_TOTAL_ITERATIONS}"
            ),
        ));
    }
    Ok(m)
}

/// A map of algorithm → something, whose keys must be exactly the algorithms of `va_data`.
fn per_algorithm<'a>(
    v: &'a Value,
    path: &str,
    algorithms: &[String],
) -> Result<Vec<(String, &'a Value)>, EngineError> {
    let obj = as_object(v, path)?;
    let mut keys: Vec<&String> = obj.keys().collect();
    let mut want: Vec<&String> = algorithms.iter().collect();
    keys.sort();
    want.sort();
    if keys != want {
        return Err(invalid(
            path,
            format!(
                "must have exactly the algorithms of va_data ({}), got ({})",
                algorithms.join(", "),
                obj.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    // Reordered to the va_data order, as R does.
    Ok(algorithms
        .iter()
        .map(|a| (a.clone(), &obj[a.as_str()]))
        .collect())
}

/// Parses and checks the form of a request body (its content is checked by `calibrate`).
pub fn parse_request(body: &Value) -> Result<CalibrationRequest, EngineError> {
    let body = body.as_object().ok_or_else(|| {
        invalid(
            "body",
            format!("must be a JSON object, got {}", type_name(body)),
        )
    })?;
    let mut r = CalibrationRequest::default();

    let va = field(body, "va_data").ok_or_else(|| invalid("va_data", "is required"))?;
    let va = as_object(va, "va_data")?;
    if va.is_empty() {
        return Err(invalid("va_data", "must contain at least one algorithm"));
    }
    if va.len() > MAX_ALGORITHMS {
        return Err(invalid(
            "va_data",
            format!("at most {MAX_ALGORITHMS} algorithms, got {}", va.len()),
        ));
    }
    for (name, data) in va {
        if name.is_empty() {
            return Err(invalid("va_data", "algorithm names must not be empty"));
        }
        let input = parse_va_input(data, &format!("va_data.{name}"))?;
        r.va_data.push((name.clone(), input));
    }
    let algorithms: Vec<String> = r.va_data.iter().map(|(a, _)| a.clone()).collect();

    if let Some(v) = field(body, "age_group") {
        let s = as_string(v, "age_group")?;
        r.age_group = Some(AgeGroup::parse(&s).ok_or_else(|| {
            invalid(
                "age_group",
                format!("must be \"neonate\" or \"child\", got \"{s}\""),
            )
        })?);
    }
    if let Some(v) = field(body, "country") {
        let s = as_string(v, "country")?;
        let trimmed = s.trim();
        if trimmed.is_empty() || trimmed.chars().count() > 100 {
            return Err(invalid("country", "must be 1 to 100 characters"));
        }
        r.country = Some(s);
    }
    if let Some(v) = field(body, "mmat_type") {
        r.mmat_type = match as_string(v, "mmat_type")?.as_str() {
            "prior" => MmatType::Prior,
            "fixed" => MmatType::Fixed,
            "samples" => MmatType::Samples,
            other => {
                return Err(invalid(
                    "mmat_type",
                    format!("must be \"prior\", \"fixed\" or \"samples\", got \"{other}\""),
                ))
            }
        };
    }
    if let Some(v) = field(body, "ensemble") {
        r.ensemble = Some(as_bool(v, "ensemble")?);
    }
    if let Some(v) = field(body, "missmat") {
        let entries = per_algorithm(v, "missmat", &algorithms)?;
        r.missmat = Some(
            entries
                .into_iter()
                .map(|(a, m)| {
                    let m = parse_user_matrix(m, &format!("missmat.{a}"))?;
                    Ok((a, m))
                })
                .collect::<Result<_, EngineError>>()?,
        );
    }
    if let Some(v) = field(body, "studycause_map") {
        let obj = as_object(v, "studycause_map")?;
        r.studycause_map = Some(
            obj.iter()
                .map(|(k, v)| Ok((k.clone(), as_string(v, &format!("studycause_map.{k}"))?)))
                .collect::<Result<_, EngineError>>()?,
        );
    }
    if let Some(v) = field(body, "donotcalib") {
        let entries = per_algorithm(v, "donotcalib", &algorithms)?;
        r.donotcalib = Some(
            entries
                .into_iter()
                .map(|(a, causes)| {
                    let causes = match causes {
                        Value::Null => None,
                        v => Some(string_list(v, &format!("donotcalib.{a}"))?),
                    };
                    Ok((a, causes))
                })
                .collect::<Result<_, EngineError>>()?,
        );
    }
    if let Some(v) = field(body, "donotcalib_type") {
        r.donotcalib_type = match as_string(v, "donotcalib_type")?.as_str() {
            "learn" => DonotcalibType::Learn,
            "fixed" => DonotcalibType::Fixed,
            other => {
                return Err(invalid(
                    "donotcalib_type",
                    format!("must be \"learn\" or \"fixed\", got \"{other}\""),
                ))
            }
        };
    }
    if let Some(v) = field(body, "nocalib_threshold") {
        let t = as_finite(v, "nocalib_threshold")?;
        if !(0.0..=1.0).contains(&t) {
            return Err(invalid("nocalib_threshold", "must be between 0 and 1"));
        }
        r.nocalib_threshold = t;
    }
    if let Some(v) = field(body, "path_correction") {
        r.path_correction = as_bool(v, "path_correction")?;
    }
    if let Some(v) = field(body, "pshrink_strength") {
        let eta = as_finite(v, "pshrink_strength")?;
        if !(0.0..=1e6).contains(&eta) {
            return Err(invalid("pshrink_strength", "must be between 0 and 1e6"));
        }
        r.pshrink_strength = Some(eta);
    }
    if let Some(v) = field(body, "rules") {
        let given = as_string(v, "rules")?;
        r.rules = Rules::parse(&given).ok_or_else(|| {
            invalid(
                "rules",
                format!("must be \"2.3.1\" or \"2.2\" (vacalibration's release), got \"{given}\""),
            )
        })?;
    }
    if let Some(v) = field(body, "mcmc") {
        r.mcmc = parse_mcmc(v)?;
    }
    Ok(r)
}

/// The request as JSON, in the same shape `parse_request` reads (round-trips).
pub fn request_json(request: &CalibrationRequest) -> Value {
    let this = request;
    let va: Map<String, Value> = this
        .va_data
        .iter()
        .map(|(a, d)| (a.clone(), va_input_json(d)))
        .collect();
    let missmat = this.missmat.as_ref().map(|m| {
        m.iter()
            .map(|(a, m)| {
                let v = match m {
                    UserMatrix::Matrix { causes, values } => {
                        json!({"causes": causes, "matrix": values})
                    }
                    UserMatrix::Samples { causes, samples } => {
                        json!({"causes": causes, "samples": samples})
                    }
                };
                (a.clone(), v)
            })
            .collect::<Map<_, _>>()
    });
    let studycause_map = this.studycause_map.as_ref().map(|m| {
        m.iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect::<Map<_, _>>()
    });
    let donotcalib = this.donotcalib.as_ref().map(|m| {
        m.iter()
            .map(|(a, c)| (a.clone(), json!(c)))
            .collect::<Map<_, _>>()
    });
    json!({
        "va_data": va,
        "age_group": this.age_group.map(AgeGroup::as_str),
        "country": this.country,
        "mmat_type": this.mmat_type.as_str(),
        "ensemble": this.ensemble,
        "missmat": missmat,
        "studycause_map": studycause_map,
        "donotcalib": donotcalib,
        "donotcalib_type": this.donotcalib_type.as_str(),
        "nocalib_threshold": this.nocalib_threshold,
        "path_correction": this.path_correction,
        "pshrink_strength": this.pshrink_strength,
        "rules": this.rules.as_str(),
        "mcmc": {
            "n_mcmc": this.mcmc.n_mcmc,
            "n_burn": this.mcmc.n_burn,
            "n_thin": this.mcmc.n_thin,
            "n_chain": this.mcmc.n_chain,
            "seed": this.mcmc.seed,
            "sampler": this.mcmc.sampler.as_str(),
        },
    })
}

fn va_input_json(d: &VaInput) -> Value {
    match d {
        VaInput::Example => json!("use_example"),
        VaInput::Records(records) => Value::Array(
            records
                .iter()
                .map(|r| json!({"ID": r.id, "cause": r.cause}))
                .collect(),
        ),
        VaInput::Indicator { causes: None, rows } => json!(rows),
        VaInput::Indicator {
            causes: Some(causes),
            rows,
        } => json!({"causes": causes, "rows": rows}),
        VaInput::Counts {
            causes: None,
            counts,
        } => json!(counts),
        VaInput::Counts {
            causes: Some(causes),
            counts,
        } => Value::Object(
            causes
                .iter()
                .zip(counts)
                .map(|(c, n)| (c.clone(), json!(n)))
                .collect(),
        ),
    }
}
