//! NUTS and the data-augmentation Gibbs sampler target the same posterior: on the exact inputs
//! of reference runs (R's own Mmat_tomodel, counts and prior), their summaries agree within
//! Monte Carlo error.

mod common;

use serde_json::Value;
use vacal_engine::diagnostics::diagnose_samples;
use vacal_engine::gibbs::sample_gibbs;
use vacal_engine::mcmc::{McmcSettings, Samples};
use vacal_engine::model::{AlgorithmTerm, Misclassification, ModelSpec};
use vacal_engine::numeric::quantile_sorted;
use vacal_engine::nuts::sample_nuts;

fn f(v: &Value) -> f64 {
    v.as_f64().expect("number")
}

/// The single-algorithm model R fitted in a reference run: r over the calibrated causes.
fn model_of(case: &str) -> ModelSpec {
    let run = common::reference::reference_runs()
        .into_iter()
        .find(|(name, _)| name == case)
        .expect("reference case exists")
        .1;
    let out = &run["outputs"];
    let algorithm = out["algorithms"][0].as_str().unwrap();
    let causes: Vec<&str> = out["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let s: Vec<&str> = causes
        .iter()
        .copied()
        .filter(|c| !out["donotcalib_tomodel"][algorithm][*c].as_bool().unwrap())
        .collect();
    let eta = f(&out["pshrink_strength_used"]);
    let n = causes.len() as f64;
    let fixed = run["inputs"]["missmat_type"] == "fixed";
    let p_prior = s
        .iter()
        .map(|c| 1.0 + n * eta * f(&out["p_uncalib"][algorithm][*c]))
        .collect();
    let matrix: Vec<Vec<f64>> = s
        .iter()
        .map(|i| {
            s.iter()
                .map(|j| f(&out["Mmat_tomodel"][algorithm][*i][*j]))
                .collect()
        })
        .collect();
    ModelSpec {
        p_prior,
        terms: vec![AlgorithmTerm {
            counts: s
                .iter()
                .map(|c| f(&out["va_deaths_uncalib"][algorithm][*c]))
                .collect(),
            calibrated: vec![true; s.len()],
            misclassification: if fixed {
                Misclassification::Fixed(matrix)
            } else {
                Misclassification::Dirichlet(matrix)
            },
        }],
    }
}

struct Summary {
    mean: Vec<f64>,
    mcse: Vec<f64>,
    lower: Vec<f64>,
    upper: Vec<f64>,
}

fn summary(samples: &Samples) -> Summary {
    let diagnostics = diagnose_samples(samples);
    let draws: Vec<&Vec<f64>> = samples.chains.iter().flat_map(|c| &c.draws).collect();
    let dim = draws[0].len();
    let mut s = Summary {
        mean: vec![],
        mcse: vec![],
        lower: vec![],
        upper: vec![],
    };
    for j in 0..dim {
        let mut column: Vec<f64> = draws.iter().map(|d| d[j]).collect();
        let mean = column.iter().sum::<f64>() / column.len() as f64;
        let var = column.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / column.len() as f64;
        column.sort_by(f64::total_cmp);
        s.mean.push(mean);
        s.mcse
            .push((var / diagnostics.per_coordinate[j].ess_bulk).sqrt());
        s.lower.push(quantile_sorted(&column, 0.025));
        s.upper.push(quantile_sorted(&column, 0.975));
    }
    s
}

fn settings(warmup: usize, draws: usize, thin: usize, seed: u64) -> McmcSettings {
    McmcSettings {
        chains: 4,
        warmup_per_chain: warmup,
        draws_per_chain: draws,
        thin,
        seed,
        target_accept: 0.9,
        max_depth: 10,
        threads: None,
    }
}

fn assert_agree(case: &str, gibbs_thin: usize) {
    let spec = model_of(case);
    let never = || false;
    let nuts = summary(&sample_nuts(&spec, &settings(1000, 2500, 1, 11), &never).unwrap());
    let gibbs =
        summary(&sample_gibbs(&spec, &settings(5000, 2500, gibbs_thin, 12), &never).unwrap());
    for j in 0..spec.dim() {
        let tolerance = 4.0 * (nuts.mcse[j].powi(2) + gibbs.mcse[j].powi(2)).sqrt();
        assert!(
            (nuts.mean[j] - gibbs.mean[j]).abs() <= tolerance,
            "{case} cause {j}: NUTS mean {} vs Gibbs {} (±{tolerance})",
            nuts.mean[j],
            gibbs.mean[j]
        );
        // Tail quantiles have no cheap MCSE; 0.015 is about twice Stan's own seed spread.
        for (what, a, b) in [
            ("2.5%", nuts.lower[j], gibbs.lower[j]),
            ("97.5%", nuts.upper[j], gibbs.upper[j]),
        ] {
            assert!(
                (a - b).abs() <= 0.015,
                "{case} cause {j}: NUTS {what} {a} vs Gibbs {b}"
            );
        }
    }
}

#[test]
fn nuts_and_gibbs_agree_on_neonatal_eava() {
    assert_agree("neonate_eava_mozambique__r1_s1", 20);
}

#[test]
fn nuts_and_gibbs_agree_without_path_correction() {
    assert_agree("neonate_eava_mozambique_nopathcorr__r1_s1", 20);
}

#[test]
fn nuts_and_gibbs_agree_on_a_custom_prior() {
    assert_agree("toy_custom_prior__r1_s1", 10);
}
