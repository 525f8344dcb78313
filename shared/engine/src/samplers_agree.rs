//! NUTS, the data-augmentation Gibbs sampler and the independence sampler target the same
//! posterior: on the exact inputs of reference runs (R's own Mmat_tomodel, counts and prior),
//! their summaries agree within Monte Carlo error, and where R's own long Stan runs on the same
//! inputs exist they reproduce those at a few thousandths, far inside the parity tolerances;
//! NUTS on R's ensemble inputs reproduces R's ensemble summaries within Monte Carlo error.

// A unit-test module: the samplers are internal to the crate.
#[path = "../tests/common/reference.rs"]
mod reference;

use serde_json::Value;

use crate::diagnostics::diagnose_samples;
use crate::gibbs::sample_gibbs;
use crate::independence::{plan, sample_independence};
use crate::mcmc::{McmcSettings, Samples};
use crate::model::{AlgorithmTerm, Misclassification, ModelSpec};
use crate::numeric::quantile;
use crate::nuts::sample_nuts;

fn f(v: &Value) -> f64 {
    v.as_f64().expect("number")
}

/// The causes of a reference run's `outputs`, in R's order.
fn causes_of(out: &Value) -> Vec<&str> {
    let causes = out["causes"].as_array().unwrap();
    causes.iter().map(|c| c.as_str().unwrap()).collect()
}

/// The causes R calibrated in `row` (an algorithm or `ensemble`), in R's order.
fn calibrated_in<'a>(out: &'a Value, row: &str) -> Vec<&'a str> {
    let excluded = |c: &str| out["donotcalib_tomodel"][row][c].as_bool().unwrap();
    causes_of(out)
        .into_iter()
        .filter(|c| !excluded(c))
        .collect()
}

/// The single-algorithm model R fitted in a reference run: r over the calibrated causes.
fn model_of(case: &str) -> ModelSpec {
    let run = reference::reference_run(case);
    let out = &run["outputs"];
    let algorithm = out["algorithms"][0].as_str().unwrap();
    let causes = causes_of(out);
    let s = calibrated_in(out, algorithm);
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
    /// Posterior standard deviation.
    sd: Vec<f64>,
    mcse: Vec<f64>,
    lower: Vec<f64>,
    upper: Vec<f64>,
    lower_mcse: Vec<f64>,
    upper_mcse: Vec<f64>,
}

/// Monte Carlo standard error of the `prob` quantile of `draws` with effective sample size
/// `ess`: half the spread of the quantiles one binomial standard error either side.
fn quantile_mcse(draws: &mut [f64], prob: f64, ess: f64) -> f64 {
    let se = (prob * (1.0 - prob) / ess).sqrt();
    let mut at = |p: f64| quantile(draws, p.clamp(0.0, 1.0));
    (at(prob + se) - at(prob - se)) / 2.0
}

fn summary(samples: &Samples) -> Summary {
    let diagnostics = diagnose_samples(samples);
    let draws: Vec<&Vec<f64>> = samples.chains.iter().flat_map(|c| &c.draws).collect();
    let dim = draws[0].len();
    let mut s = Summary {
        mean: vec![],
        sd: vec![],
        mcse: vec![],
        lower: vec![],
        upper: vec![],
        lower_mcse: vec![],
        upper_mcse: vec![],
    };
    for j in 0..dim {
        let mut column: Vec<f64> = draws.iter().map(|d| d[j]).collect();
        let mean = column.iter().sum::<f64>() / column.len() as f64;
        let var = column.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / column.len() as f64;
        s.mean.push(mean);
        s.sd.push(var.sqrt());
        s.mcse
            .push((var / diagnostics.per_coordinate[j].ess_bulk).sqrt());
        let ess = diagnostics.per_coordinate[j].ess_bulk;
        s.lower.push(quantile(&mut column, 0.025));
        s.upper.push(quantile(&mut column, 0.975));
        s.lower_mcse.push(quantile_mcse(&mut column, 0.025, ess));
        s.upper_mcse.push(quantile_mcse(&mut column, 0.975, ess));
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
    assert_summaries_agree(case, ("NUTS", &nuts), ("Gibbs", &gibbs));
}

fn assert_summaries_agree(
    case: &str,
    (a_name, a): (&str, &Summary),
    (b_name, b): (&str, &Summary),
) {
    for j in 0..a.mean.len() {
        let tolerance = 4.0 * (a.mcse[j].powi(2) + b.mcse[j].powi(2)).sqrt();
        assert!(
            (a.mean[j] - b.mean[j]).abs() <= tolerance,
            "{case} cause {j}: {a_name} mean {} vs {b_name} {} (±{tolerance})",
            a.mean[j],
            b.mean[j]
        );
        // 0.015 is about twice Stan's own seed spread; a cause with a long, flat tail
        // (InterVA's prematurity) has a larger Monte Carlo error than that.
        for (what, x, y, x_se, y_se) in [
            (
                "2.5%",
                a.lower[j],
                b.lower[j],
                a.lower_mcse[j],
                b.lower_mcse[j],
            ),
            (
                "97.5%",
                a.upper[j],
                b.upper[j],
                a.upper_mcse[j],
                b.upper_mcse[j],
            ),
        ] {
            let tolerance = f64::max(0.015, 4.0 * x_se.hypot(y_se));
            assert!(
                (x - y).abs() <= tolerance,
                "{case} cause {j}: {a_name} {what} {x} vs {b_name} {y} (±{tolerance})"
            );
        }
    }
}

/// On path-corrected matrices the pilot accepts the independence sampler, and its draws agree
/// with NUTS's.
fn assert_independence_agrees(case: &str) {
    let spec = model_of(case);
    let never = || false;
    let plan = plan(&spec, 5).expect("the pilot accepts a path-corrected model");
    assert!(plan.acceptance >= 0.1 && plan.steps >= 1, "{plan:?}");
    let nuts = summary(&sample_nuts(&spec, &settings(1000, 2500, 1, 11), &never).unwrap());
    let independence =
        summary(&sample_independence(&spec, &settings(1000, 2500, 1, 13), plan, &never).unwrap());
    assert_summaries_agree(case, ("NUTS", &nuts), ("independence", &independence));
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

#[test]
fn nuts_and_independence_agree_on_neonatal_eava() {
    assert_independence_agrees("neonate_eava_mozambique__r1_s1");
}

#[test]
fn nuts_and_independence_agree_on_neonatal_interva() {
    assert_independence_agrees("neonate_interva_mozambique__r1_s1");
}

#[test]
fn the_pilot_declines_the_independence_sampler_without_path_correction() {
    // Without path correction p = M⁻ᵀq rarely lands in the simplex (about 1 in 600 proposals).
    assert_eq!(
        plan(&model_of("neonate_eava_mozambique_nopathcorr__r1_s1"), 5),
        None
    );
}

/// One of R's long Stan runs in `gibbs_vs_stan.json` (one chain of 40,000 draws on the exact
/// inputs of a reference run): its summaries `{"postmean" | "lowcredI" | "upcredI": {cause:
/// value}}` on the full cause scale, and per summary the largest difference between two long
/// runs with different Stan seeds.
fn long_stan_run(case: &str) -> (Value, Value) {
    let file = reference::fixtures_dir().join("gibbs_vs_stan.json");
    let all: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let run = &all["long_runs"][case];
    assert_eq!(run["same_Mmat_tomodel_as_reference"], true, "{case}");
    assert_eq!(run["long_stan_nMCMC"], 40000, "{case}");
    let rows = run["rows"].as_object().unwrap();
    assert_eq!(rows.len(), 1, "{case}: one algorithm");
    let seed_spread = &all["long_stan_seed_to_seed_max_abs_diff"]["neonate_insilicova_mozambique"];
    (rows.values().next().unwrap().clone(), seed_spread.clone())
}

/// Compares summaries of draws over the calibrated causes of reference run `fixture` (in the
/// order of [`model_of`]) with R's long Stan run `case` on the same inputs. The draws are
/// rescaled as R does (§8.1: a calibrated cause's share times the uncalibrated mass `D` of the
/// calibrated set). Tolerance per value: twice the largest difference between two long Stan
/// runs with different seeds, plus four Monte Carlo standard errors of ours.
fn assert_matches_long_stan(case: &str, fixture: &str, sampler: &str, ours: &Summary) {
    let (stan, seed_spread) = long_stan_run(case);
    let run = reference::reference_run(fixture);
    let out = &run["outputs"];
    let algorithm = out["algorithms"][0].as_str().unwrap();
    let calibrated = calibrated_in(out, algorithm);
    assert_eq!(
        calibrated.len(),
        ours.mean.len(),
        "{case}: one summary per calibrated cause"
    );
    let mass: f64 = calibrated
        .iter()
        .map(|c| f(&out["p_uncalib"][algorithm][*c]))
        .sum();
    for (what, values, errors) in [
        ("postmean", &ours.mean, &ours.mcse),
        ("lowcredI", &ours.lower, &ours.lower_mcse),
        ("upcredI", &ours.upper, &ours.upper_mcse),
    ] {
        for (pos, cause) in calibrated.iter().enumerate() {
            let got = mass * values[pos];
            let want = f(&stan[what]["long_stan"][*cause]);
            let tolerance = 2.0 * f(&seed_spread[what]) + 4.0 * mass * errors[pos];
            assert!(
                (got - want).abs() <= tolerance,
                "{case}, {sampler}, {what} of {cause}: {got} against long Stan's {want} (±{tolerance})"
            );
        }
    }
}

/// NUTS and the independence sampler (what `auto` picks for path-corrected single fits)
/// reproduce R's long Stan runs on the exact same inputs, far inside the parity tolerances.
#[test]
fn single_fits_match_long_stan_runs_on_the_same_inputs() {
    let never = || false;
    for (case, fixture) in [
        (
            "neonate_interva_mozambique",
            "neonate_interva_mozambique__r1_s1",
        ),
        (
            "neonate_insilicova_mozambique",
            "neonate_insilicova_mozambique__r1_s1",
        ),
        ("toy_custom_prior", "toy_custom_prior__r1_s1"),
    ] {
        let spec = model_of(fixture);
        let plan = plan(&spec, 21).expect("the pilot accepts a path-corrected model");
        let independence = sample_independence(&spec, &settings(500, 10000, 1, 22), plan, &never);
        let nuts = sample_nuts(&spec, &settings(1000, 10000, 1, 23), &never);
        assert_matches_long_stan(
            case,
            fixture,
            "independence",
            &summary(&independence.unwrap()),
        );
        assert_matches_long_stan(case, fixture, "NUTS", &summary(&nuts.unwrap()));
    }
}

/// The Gibbs sampler (what `auto` picks for the ε-expanded CA CODE matrix, where NUTS does not
/// converge) reproduces R's long Stan run on the same inputs.
#[test]
fn gibbs_matches_the_long_stan_run_on_ca_code_inputs() {
    let fixture = "cacode_bangladesh_eava_counts__r1_s1";
    let gibbs = sample_gibbs(&model_of(fixture), &settings(2500, 5000, 25, 24), &|| false);
    let case = "cacode_bangladesh_eava_counts";
    assert_matches_long_stan(case, fixture, "Gibbs", &summary(&gibbs.unwrap()));
}

/// About the smallest chain-order min bulk ESS of Stan's ensemble fit on the neonatal reference
/// inputs (1,305 over three Stan seeds, BENCHMARKS.md "ESS: R's figure and Stan's own"): the
/// Monte Carlo error of R's recorded ensemble summaries is taken at this ESS.
const STAN_ENSEMBLE_ESS: f64 = 1300.0;

/// The prior-type ensemble model R fitted in a reference run, from its recorded inputs to Stan:
/// p over every cause, and each algorithm's counts, calibrated set and `Mmat_tomodel`.
fn ensemble_model_of(run: &Value) -> ModelSpec {
    let out = &run["outputs"];
    let causes = causes_of(out);
    let n = causes.len() as f64;
    let eta = f(&out["pshrink_strength_used"]);
    let pooled = &out["p_uncalib"]["ensemble"];
    ModelSpec {
        p_prior: causes
            .iter()
            .map(|c| 1.0 + n * eta * f(&pooled[*c]))
            .collect(),
        terms: out["algorithms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                let a = a.as_str().unwrap();
                // R's NA rows (uncalibrated causes) are not read: any positive value will do.
                let alpha = |i: &str, j: &str| out["Mmat_tomodel"][a][i][j].as_f64().unwrap_or(1.0);
                AlgorithmTerm {
                    counts: causes
                        .iter()
                        .map(|c| f(&out["va_deaths_uncalib"][a][*c]))
                        .collect(),
                    calibrated: causes
                        .iter()
                        .map(|c| !out["donotcalib_tomodel"][a][*c].as_bool().unwrap())
                        .collect(),
                    misclassification: Misclassification::Dirichlet(
                        causes
                            .iter()
                            .map(|i| causes.iter().map(|j| alpha(i, j)).collect())
                            .collect(),
                    ),
                }
            })
            .collect(),
    }
}

/// NUTS on R's own ensemble inputs reproduces R's recorded ensemble summaries within four
/// combined Monte Carlo errors (ours, and Stan's at its chain-order ESS), and so checks the
/// ensemble model (pooled prior, one likelihood per algorithm, per-algorithm calibrated sets)
/// far inside the parity tolerances.
#[test]
fn nuts_matches_r_ensembles_on_the_same_inputs() {
    let never = || false;
    for case in [
        "neonate_ensemble_mozambique__r1_s1",
        "neonate_ensemble_mozambique__r2_s2",
        "neonate_ensemble_mozambique_mixed_donotcalib__r1_s1",
    ] {
        let run = reference::reference_run(case);
        let out = &run["outputs"];
        let causes = causes_of(out);
        let calibrated = calibrated_in(out, "ensemble");
        let s_idx: Vec<usize> = calibrated
            .iter()
            .map(|c| causes.iter().position(|x| x == c).unwrap())
            .collect();
        let mass: f64 = calibrated
            .iter()
            .map(|c| f(&out["p_uncalib"]["ensemble"][*c]))
            .sum();
        let mut samples = sample_nuts(
            &ensemble_model_of(&run),
            &settings(1000, 5000, 1, 31),
            &never,
        )
        .unwrap();
        // §8.1: the calibrated causes' shares of the calibrated set, times its uncalibrated mass.
        for draw in samples.chains.iter_mut().flat_map(|c| c.draws.iter_mut()) {
            let total: f64 = s_idx.iter().map(|&j| draw[j]).sum();
            *draw = s_idx.iter().map(|&j| mass * draw[j] / total).collect();
        }
        let ours = summary(&samples);
        let draws: Vec<&Vec<f64>> = samples.chains.iter().flat_map(|c| &c.draws).collect();
        let want = &out["pcalib_postsumm"]["ensemble"];
        for (pos, cause) in calibrated.iter().enumerate() {
            let mut column: Vec<f64> = draws.iter().map(|d| d[pos]).collect();
            let stan_errors = [
                ours.sd[pos] / STAN_ENSEMBLE_ESS.sqrt(),
                quantile_mcse(&mut column, 0.025, STAN_ENSEMBLE_ESS),
                quantile_mcse(&mut column, 0.975, STAN_ENSEMBLE_ESS),
            ];
            for (k, (what, got, error)) in [
                ("postmean", ours.mean[pos], ours.mcse[pos]),
                ("lowcredI", ours.lower[pos], ours.lower_mcse[pos]),
                ("upcredI", ours.upper[pos], ours.upper_mcse[pos]),
            ]
            .into_iter()
            .enumerate()
            {
                let r = f(&want[what][*cause]);
                let tolerance = 4.0 * error.hypot(stan_errors[k]);
                assert!(
                    (got - r).abs() <= tolerance,
                    "{case}, {what} of {cause}: {got} against R's {r} (±{tolerance})"
                );
            }
        }
    }
}
