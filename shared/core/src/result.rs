//! A calibration as the API's result (api-reference §5.5): the engine returns types, and
//! this is the one place that turns them into the contract's.

use indexmap::IndexMap;
use serde_json::{json, Value};
use vacal_contract as wire;
use vacal_engine::{
    data, mcmc_settings, Calibration, CalibrationRequest, Diagnostics, RowResult, ENGINE_VERSION,
};

use crate::request::request_json;

fn amounts(values: &[f64]) -> Vec<wire::Amount> {
    values.iter().copied().map(wire::Amount).collect()
}

/// A diagnostic that could not be computed (too few draws) is null.
fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

fn diagnostics(d: &Diagnostics, causes: &[String]) -> wire::FitDiagnostics {
    wire::FitDiagnostics {
        sampler: d.sampler.to_string(),
        max_rhat: finite(d.max_rhat),
        min_ess_bulk: finite(d.min_ess_bulk),
        divergences: d.divergences as u64,
        max_treedepth_hits: d.max_depth_hits as u64,
        draws: d.draws as u64,
        seconds: d.seconds,
        multimodal_causes: d
            .multimodal_causes
            .iter()
            .map(|&j| causes[j].clone())
            .collect(),
    }
}

/// The settings the run used, with every default resolved (the data themselves left out).
pub(crate) fn resolved_settings(
    request: &CalibrationRequest,
    algorithms: &[String],
    ensemble: bool,
    pshrink_strength: f64,
) -> Value {
    let mut settings = request_json(request);
    let obj = settings
        .as_object_mut()
        .expect("request_json gives an object");
    obj.remove("va_data");
    obj.insert("algorithms".into(), json!(algorithms));
    let missmat = if request.missmat.is_some() {
        "user"
    } else {
        "stored"
    };
    obj.insert("missmat".into(), json!(missmat));
    let stored_country = match (&request.missmat, &request.country) {
        (None, Some(country)) => json!(data::resolve_country(country)),
        _ => Value::Null,
    };
    obj.insert("matrix_country".into(), stored_country);
    obj.insert("ensemble".into(), json!(ensemble));
    obj.insert("pshrink_strength".into(), json!(pshrink_strength));
    let m = mcmc_settings(&request.mcmc, request.mcmc.seed);
    if let Some(mcmc) = obj.get_mut("mcmc").and_then(Value::as_object_mut) {
        mcmc.insert("warmup_per_chain".into(), json!(m.warmup_per_chain));
        mcmc.insert("draws_per_chain".into(), json!(m.draws_per_chain));
        mcmc.insert("target_accept".into(), json!(m.target_accept));
        mcmc.insert("max_depth".into(), json!(m.max_depth));
    }
    settings
}

fn by_row<T>(rows: &[RowResult], f: impl Fn(&RowResult) -> T) -> IndexMap<String, T> {
    rows.iter().map(|r| (r.name.clone(), f(r))).collect()
}

/// The output of a calibration of `request`.
pub fn calibration_output(
    request: &CalibrationRequest,
    calibration: &Calibration,
) -> wire::CalibrationOutput {
    let rows = &calibration.rows;
    let by_algorithm = |deaths: &[Vec<f64>]| {
        calibration
            .algorithms
            .iter()
            .zip(deaths)
            .map(|(a, d)| (a.clone(), amounts(d)))
            .collect::<IndexMap<String, Vec<wire::Amount>>>()
    };
    wire::CalibrationOutput {
        status: "success".into(),
        causes: calibration.causes.clone(),
        uncalibrated: by_row(rows, |r| r.uncalibrated.clone()),
        calibrated: by_row(rows, |r| wire::CalibratedEstimate {
            mean: r.mean.clone(),
            lower_ci: r.lower_ci.clone(),
            upper_ci: r.upper_ci.clone(),
        }),
        lambda: calibration
            .algorithms
            .iter()
            .zip(&calibration.lambda)
            .map(|(a, l)| (a.clone(), *l))
            .collect(),
        path_correction: calibration
            .algorithms
            .iter()
            .zip(&calibration.path_correction)
            .map(|(a, pc)| {
                let pc = pc.map(|pc| wire::PathCorrection {
                    lambda: pc.lambda,
                    stalled: pc.stalled,
                });
                (a.clone(), pc)
            })
            .collect(),
        calibrated_causes: by_row(rows, |r| r.calibrated_causes.clone()),
        uncalibrated_deaths: by_algorithm(&calibration.deaths_uncalibrated),
        calibrated_deaths: by_algorithm(&calibration.deaths_calibrated),
        calibrated_deaths_ensemble: calibration
            .deaths_calibrated_ensemble
            .as_deref()
            .map(by_algorithm),
        percentages: wire::Percentages {
            uncalibrated: by_row(rows, |r| amounts(&r.uncalibrated_percentage)),
            calibrated: by_row(rows, |r| amounts(&r.calibrated_percentage)),
        },
        diagnostics: by_row(rows, |r| {
            r.diagnostics
                .as_ref()
                .map(|d| diagnostics(d, &calibration.causes))
        }),
        warnings: calibration.warnings(),
        settings: resolved_settings(
            request,
            &calibration.algorithms,
            calibration.ensemble,
            calibration.pshrink_strength,
        ),
        engine_version: ENGINE_VERSION.to_string(),
    }
}
