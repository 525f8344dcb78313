//! The result object of the API (api-reference §5.5, extended by the engine).

use serde_json::{json, Map, Value};

use crate::calibrate::{mcmc_settings, Calibration};
use crate::data;
use crate::request::CalibrationRequest;
use crate::ENGINE_VERSION;

/// A whole number as a JSON integer, anything else as a float.
fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

fn numbers(v: &[f64]) -> Value {
    Value::Array(v.iter().copied().map(number).collect())
}

/// The settings the run used, with every default resolved (the data themselves left out).
pub fn resolved_settings(request: &CalibrationRequest, calibration: &Calibration) -> Value {
    let mut settings = request.to_json();
    let obj = settings.as_object_mut().expect("to_json gives an object");
    obj.remove("va_data");
    obj.insert("algorithms".into(), json!(calibration.algorithms));
    obj.insert(
        "missmat".into(),
        json!(if request.missmat.is_some() {
            "user"
        } else {
            "stored"
        }),
    );
    let stored_country = match (&request.missmat, &request.country) {
        (None, Some(country)) => json!(data::resolve_country(country)),
        _ => Value::Null,
    };
    obj.insert("matrix_country".into(), stored_country);
    obj.insert("ensemble".into(), json!(calibration.ensemble));
    obj.insert(
        "pshrink_strength".into(),
        json!(calibration.pshrink_strength),
    );
    let m = mcmc_settings(&request.mcmc, request.mcmc.seed);
    if let Some(mcmc) = obj.get_mut("mcmc").and_then(Value::as_object_mut) {
        mcmc.insert("warmup_per_chain".into(), json!(m.warmup_per_chain));
        mcmc.insert("draws_per_chain".into(), json!(m.draws_per_chain));
        mcmc.insert("target_accept".into(), json!(m.target_accept));
        mcmc.insert("max_depth".into(), json!(m.max_depth));
    }
    settings
}

/// Renders a calibration as the API's `result` object.
pub fn result_json(request: &CalibrationRequest, calibration: &Calibration) -> Value {
    let by_row = |f: &dyn Fn(&crate::RowResult) -> Value| -> Value {
        Value::Object(
            calibration
                .rows
                .iter()
                .map(|r| (r.name.clone(), f(r)))
                .collect::<Map<_, _>>(),
        )
    };
    let by_algorithm = |rows: &[Vec<f64>]| -> Value {
        Value::Object(
            calibration
                .algorithms
                .iter()
                .zip(rows)
                .map(|(a, r)| (a.clone(), numbers(r)))
                .collect(),
        )
    };
    json!({
        "status": "success",
        "causes": calibration.causes,
        "uncalibrated": by_row(&|r| json!(r.uncalibrated)),
        "calibrated": by_row(&|r| json!({
            "mean": r.mean, "lower_ci": r.lower_ci, "upper_ci": r.upper_ci,
        })),
        "lambda": Value::Object(
            calibration
                .algorithms
                .iter()
                .zip(&calibration.lambda)
                .map(|(a, l)| (a.clone(), json!(l)))
                .collect(),
        ),
        "calibrated_causes": by_row(&|r| json!(r.calibrated_causes)),
        "uncalibrated_deaths": by_algorithm(&calibration.deaths_uncalibrated),
        "calibrated_deaths": by_algorithm(&calibration.deaths_calibrated),
        "calibrated_deaths_ensemble": calibration
            .deaths_calibrated_ensemble
            .as_deref()
            .map(by_algorithm)
            .unwrap_or(Value::Null),
        "percentages": {
            "uncalibrated": by_row(&|r| numbers(&r.uncalibrated_percentage)),
            "calibrated": by_row(&|r| numbers(&r.calibrated_percentage)),
        },
        "diagnostics": by_row(&|r| match &r.diagnostics {
            None => Value::Null,
            Some(d) => json!({
                "sampler": d.sampler,
                "max_rhat": d.max_rhat,
                "min_ess_bulk": d.min_ess_bulk,
                "divergences": d.divergences,
                "max_treedepth_hits": d.max_depth_hits,
                "draws": d.draws,
                "seconds": d.seconds,
            }),
        }),
        "warnings": calibration.warnings(),
        "settings": resolved_settings(request, calibration),
        "engine_version": ENGINE_VERSION,
    })
}

/// The `warnings` of a result object made by [`result_json`] (none if it has no such array).
pub fn result_warnings(result: &Value) -> Vec<&str> {
    result["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}
