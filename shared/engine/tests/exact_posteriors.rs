//! Documented behaviour that no R reference run exercises (the fixed type, the priors of p
//! with η > 0, the fixed ensemble, the λ cap, η under path correction), checked end to end
//! through `calibrate` against posteriors this file computes by quadrature on two-cause
//! problems (calibration-model.md §6, §7, §9). The quadrature uses the documented prior of p,
//! so a wrong p0 scaling (C·η·p0 against |S|·η·q) moves the sampled mean several Monte Carlo
//! errors away from it.

mod common;

use common::{result_of, ByName};
use serde_json::{json, Value};
use vacal_engine::Calibration;

/// Mean and 2.5 % / 97.5 % quantiles of a density given on midpoints of (0, 1).
struct Posterior {
    mean: f64,
    lower: f64,
    upper: f64,
}

fn posterior_from_log_weights(grid: &[f64], log_w: &[f64]) -> Posterior {
    let top = log_w.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = log_w.iter().map(|l| (l - top).exp()).collect();
    let total: f64 = w.iter().sum();
    let mean = grid.iter().zip(&w).map(|(x, w)| x * w).sum::<f64>() / total;
    let quantile = |prob: f64| {
        let mut cumulative = 0.0;
        for (i, wi) in w.iter().enumerate() {
            let next = cumulative + wi / total;
            if next >= prob {
                // Linear within the cell around grid[i].
                let h = 1.0 / grid.len() as f64;
                return grid[i] - h / 2.0 + h * (prob - cumulative) / (next - cumulative);
            }
            cumulative = next;
        }
        1.0
    };
    Posterior {
        mean,
        lower: quantile(0.025),
        upper: quantile(0.975),
    }
}

fn midpoints(n: usize) -> Vec<f64> {
    (0..n).map(|i| (i as f64 + 0.5) / n as f64).collect()
}

fn ln_beta_kernel(x: f64, a: f64, b: f64) -> f64 {
    (a - 1.0) * x.ln() + (b - 1.0) * (1.0 - x).ln()
}

/// Posterior of `r` (the share of the first of two calibrated causes) under
/// `r ~ Beta(prior)` and, per algorithm, counts `(n_a, n_b)` with a fixed 2 × 2 matrix `m`
/// over the calibrated causes: `P(VA says a) = r·m[0][0] + (1 − r)·m[1][0]`.
fn fixed_posterior(prior: (f64, f64), terms: &[([[f64; 2]; 2], f64, f64)]) -> Posterior {
    let grid = midpoints(20_000);
    let log_w: Vec<f64> = grid
        .iter()
        .map(|&r| {
            let mut l = ln_beta_kernel(r, prior.0, prior.1);
            for (m, n_a, n_b) in terms {
                let q_a = r * m[0][0] + (1.0 - r) * m[1][0];
                l += n_a * q_a.ln() + n_b * (1.0 - q_a).ln();
            }
            l
        })
        .collect();
    posterior_from_log_weights(&grid, &log_w)
}

/// Posterior of `r` under `r ~ Beta(prior)` with Dirichlet rows over the two calibrated
/// causes: row a = (t, 1 − t), t ~ Beta(row_a), row b = (1 − u, u), u ~ Beta(row_b).
fn prior_posterior(
    prior: (f64, f64),
    row_a: (f64, f64),
    row_b: (f64, f64),
    n: (f64, f64),
) -> Posterior {
    let grid = midpoints(400);
    let rows = midpoints(150);
    let ln_t: Vec<f64> = rows
        .iter()
        .map(|&t| ln_beta_kernel(t, row_a.0, row_a.1))
        .collect();
    let ln_u: Vec<f64> = rows
        .iter()
        .map(|&u| ln_beta_kernel(u, row_b.1, row_b.0))
        .collect();
    let log_w: Vec<f64> = grid
        .iter()
        .map(|&r| {
            // log ∫∫ of the row priors times the likelihood, by log-sum-exp over the cells.
            let mut cells = Vec::with_capacity(rows.len() * rows.len());
            for (t, lt) in rows.iter().zip(&ln_t) {
                for (u, lu) in rows.iter().zip(&ln_u) {
                    let q_a = r * t + (1.0 - r) * (1.0 - u);
                    cells.push(lt + lu + n.0 * q_a.ln() + n.1 * (1.0 - q_a).ln());
                }
            }
            let top = cells.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = cells.iter().map(|c| (c - top).exp()).sum();
            ln_beta_kernel(r, prior.0, prior.1) + top + sum.ln()
        })
        .collect();
    posterior_from_log_weights(&grid, &log_w)
}

/// Compares the calibrated share of cause a among the calibrated causes {a, b}.
fn assert_close_to(result: &Calibration, row: &str, exact: &Posterior, what: &str) {
    let calibrated = result.row(row);
    let (mean, lower, upper) = (&calibrated.mean, &calibrated.lower_ci, &calibrated.upper_ci);
    // D, the calibrated causes' uncalibrated share, scales r into the output (§8.1).
    let share = mean[0] + mean[1];
    let (r_mean, r_lower, r_upper) = (mean[0] / share, lower[0] / share, upper[0] / share);
    // Monte Carlo error of the mean is about 0.001 here (sd ≈ 0.05, ESS in the thousands).
    assert!(
        (r_mean - exact.mean).abs() < 0.006,
        "{what}: mean {r_mean} against the exact {}",
        exact.mean
    );
    assert!(
        (r_lower - exact.lower).abs() < 0.01 && (r_upper - exact.upper).abs() < 0.015,
        "{what}: interval ({r_lower}, {r_upper}) against the exact ({}, {})",
        exact.lower,
        exact.upper
    );
}

fn mcmc(sampler: &str) -> Value {
    // Gibbs mixes slowly on these posteriors: it keeps every 20th sweep.
    let thin = if sampler == "gibbs" { 20 } else { 1 };
    json!({"n_mcmc": 8000, "n_burn": 2000, "n_thin": thin, "seed": 5, "sampler": sampler})
}

/// Fits causes a, b and `other` (not calibrated by default) with 20, 80 and 300 deaths,
/// without path correction, so η takes its default of 4, with every sampler, and compares r
/// with `exact`; `other_scaling` is the posterior under the other type's prior of p.
fn assert_three_cause_fits(
    mmat_type: &str,
    matrix: [[f64; 3]; 3],
    exact: &Posterior,
    other_scaling: &Posterior,
) {
    assert!(
        (exact.mean - other_scaling.mean).abs() > 0.012,
        "the test can tell the priors apart"
    );
    for sampler in SAMPLERS {
        let result = result_of(&json!({
            "va_data": {"x": {"a": 20, "b": 80, "other": 300}}, "mmat_type": mmat_type,
            "path_correction": false,
            "missmat": {"x": {"causes": ["a", "b", "other"], "matrix": matrix}},
            "mcmc": mcmc(sampler),
        }));
        assert_eq!(result.pshrink_strength, 4.0);
        assert_eq!(result.lambda_of("x"), Some(0.0));
        let calibrated = result.row("x");
        assert_eq!(calibrated.calibrated_causes, [true, true, false]);
        for (bound, values) in [
            ("mean", &calibrated.mean),
            ("lower_ci", &calibrated.lower_ci),
            ("upper_ci", &calibrated.upper_ci),
        ] {
            assert_eq!(values[2], 0.75, "{bound} of the excluded cause");
        }
        assert_close_to(
            &result,
            "x",
            exact,
            &format!("{mmat_type}, η = 4, {sampler}"),
        );
    }
}

const SAMPLERS: [&str; 3] = ["auto", "nuts", "gibbs"];

/// §6.2: the fixed grid walks down from 1.00; with q = (0.25, 0.75) and this matrix, the
/// calibrated q first leaves the simplex when (1 − λ)·0.3 > 0.25, at λ = 0.16, so λ = 0.17 and
/// the model uses 0.17·I + 0.83·B with p ~ Dirichlet(1, 1) (η = 0 under path correction).
#[test]
fn fixed_path_correction_lands_on_the_hand_computed_lambda_and_the_exact_posterior() {
    let b = [[0.8, 0.2], [0.3, 0.7]];
    let lambda = 0.17;
    let m_lambda = [
        [lambda + (1.0 - lambda) * b[0][0], (1.0 - lambda) * b[0][1]],
        [(1.0 - lambda) * b[1][0], lambda + (1.0 - lambda) * b[1][1]],
    ];
    let exact = fixed_posterior((1.0, 1.0), &[(m_lambda, 25.0, 75.0)]);
    let without_correction = fixed_posterior((1.0, 1.0), &[(b, 25.0, 75.0)]);
    assert!(
        (exact.mean - without_correction.mean).abs() > 0.01,
        "the test can tell λ apart"
    );
    for sampler in SAMPLERS {
        let result = result_of(&json!({
            "va_data": {"x": {"a": 25, "b": 75}}, "mmat_type": "fixed",
            "missmat": {"x": {"causes": ["a", "b"], "matrix": b}},
            "mcmc": mcmc(sampler),
        }));
        let got_lambda = result.lambda_of("x").unwrap();
        assert!((got_lambda - lambda).abs() < 1e-9, "λ = {got_lambda}");
        assert_eq!(result.pshrink_strength, 0.0);
        assert_close_to(
            &result,
            "x",
            &exact,
            &format!("fixed, path correction, {sampler}"),
        );
        let deaths = result.deaths_of("x");
        assert_eq!(deaths.iter().sum::<f64>(), 100.0);
        let mean = &result.row("x").mean;
        assert!(
            (deaths[0] - 100.0 * mean[0]).abs() <= 1.0,
            "{deaths:?} against {mean:?}"
        );
    }
}

/// §7.2: a fixed single fit gives p_S the prior Dirichlet(1 + |S|·η·q), with q the CSMF
/// renormalised over S; η defaults to 4 without path correction. The excluded `other` keeps its
/// uncalibrated share, and its counts do not enter the model; the matrix enters as its S × S
/// block with each row renormalised (§6.2).
#[test]
fn a_fixed_fit_without_path_correction_uses_one_plus_s_eta_q() {
    let matrix = [[0.8, 0.16, 0.04], [0.2, 0.76, 0.04], [0.1, 0.1, 0.8]];
    let over_s = [[0.8 / 0.96, 0.16 / 0.96], [0.2 / 0.96, 0.76 / 0.96]];
    let (eta, s, q) = (4.0, 2.0, [0.2, 0.8]);
    let exact = fixed_posterior(
        (1.0 + s * eta * q[0], 1.0 + s * eta * q[1]),
        &[(over_s, 20.0, 80.0)],
    );
    // R's prior-type scaling, C·η·p0 with the unrenormalised p0 = (0.05, 0.2, 0.75).
    let other_scaling = fixed_posterior(
        (1.0 + 3.0 * eta * 0.05, 1.0 + 3.0 * eta * 0.2),
        &[(over_s, 20.0, 80.0)],
    );
    assert_three_cause_fits("fixed", matrix, &exact, &other_scaling);
}

/// §7.1: a prior single fit gives r = p_S / Σ p_S the prior Dirichlet((1 + C·η·p0)_S), with
/// the full C and the unrenormalised p0, and the rows of the Dirichlet matrix renormalised
/// over S.
#[test]
fn a_prior_fit_without_path_correction_uses_one_plus_c_eta_p0() {
    let alpha = [[40.0, 8.0, 2.0], [10.0, 38.0, 2.0], [5.0, 5.0, 40.0]];
    let (eta, c, p0) = (4.0, 3.0, [0.05, 0.2]);
    let prior = (1.0 + c * eta * p0[0], 1.0 + c * eta * p0[1]);
    let exact = prior_posterior(prior, (40.0, 8.0), (10.0, 38.0), (20.0, 80.0));
    // The fixed type's scaling, 1 + |S|·η·q with q = (0.2, 0.8).
    let other_scaling = prior_posterior((2.6, 7.4), (40.0, 8.0), (10.0, 38.0), (20.0, 80.0));
    assert_three_cause_fits("prior", alpha, &exact, &other_scaling);
}

/// §9: the fixed ensemble samples p over S_ens with the prior Dirichlet(1 + |S_ens|·η·q_ens),
/// q_ens being the deaths pooled over algorithms and renormalised over S_ens, and multiplies
/// every algorithm's likelihood on S_ens.
#[test]
fn the_fixed_ensemble_pools_the_deaths_and_multiplies_the_likelihoods() {
    let first = [[0.8, 0.16, 0.04], [0.2, 0.76, 0.04], [0.1, 0.1, 0.8]];
    let second = [[0.7, 0.2, 0.1], [0.1, 0.85, 0.05], [0.2, 0.2, 0.6]];
    let over_s = |m: [[f64; 3]; 3]| {
        let row = |i: usize| {
            let sum = m[i][0] + m[i][1];
            [m[i][0] / sum, m[i][1] / sum]
        };
        [row(0), row(1)]
    };
    let q_ens = [70.0 / 200.0, 130.0 / 200.0];
    let eta = 4.0;
    let exact = fixed_posterior(
        (1.0 + 2.0 * eta * q_ens[0], 1.0 + 2.0 * eta * q_ens[1]),
        &[(over_s(first), 20.0, 80.0), (over_s(second), 50.0, 50.0)],
    );
    let first_alone = fixed_posterior(
        (1.0 + 2.0 * eta * 0.2, 1.0 + 2.0 * eta * 0.8),
        &[(over_s(first), 20.0, 80.0)],
    );
    assert!(
        (exact.mean - first_alone.mean).abs() > 0.1,
        "the ensemble differs from one algorithm"
    );
    let result = result_of(&json!({
        "va_data": {"x": {"a": 20, "b": 80, "other": 300}, "y": {"a": 50, "b": 50, "other": 200}},
        "mmat_type": "fixed", "path_correction": false,
        "missmat": {
            "x": {"causes": ["a", "b", "other"], "matrix": first},
            "y": {"causes": ["a", "b", "other"], "matrix": second},
        },
        "mcmc": mcmc("auto"),
    }));
    assert!(result.ensemble);
    assert_close_to(&result, "ensemble", &exact, "fixed ensemble");
    // `other` keeps the pooled uncalibrated share: 500 of 700 deaths.
    assert_eq!(result.row("ensemble").mean[2], 500.0 / 700.0);
    // Every algorithm's deaths on S_ens are redistributed with the ensemble CSMF (§9).
    let ensemble_mean = &result.row("ensemble").mean;
    let r = ensemble_mean[0] / (ensemble_mean[0] + ensemble_mean[1]);
    for (algorithm, n_s, other) in [("x", 100.0, 300.0), ("y", 100.0, 200.0)] {
        let deaths = result.ensemble_deaths_of(algorithm);
        assert_eq!(
            deaths[2], other,
            "{algorithm}: `other` keeps its observed deaths"
        );
        assert_eq!(deaths[0] + deaths[1], n_s);
        assert!(
            (deaths[0] - n_s * r).abs() <= 1.0,
            "{algorithm}: {deaths:?}, r = {r}"
        );
    }
}

/// §6.1 and §6.2: when the calibrated CSMF leaves the simplex at the grid's first step below
/// the top, the prior type caps λ at 0.99 and the fixed type, whose grid starts at 1.00, does
/// not cap it. Both are stalls. (2.2's rules: 2.3.1's would not calibrate the empty cause.)
#[test]
fn lambda_is_capped_at_0_99_for_prior_matrices_only() {
    for (mmat_type, matrix, want) in [
        ("prior", json!([[40, 10], [15, 35]]), 0.99),
        ("fixed", json!([[0.8, 0.2], [0.3, 0.7]]), 1.0),
    ] {
        let result = result_of(&json!({
            "va_data": {"x": {"a": 0, "b": 100}}, "mmat_type": mmat_type,
            "missmat": {"x": {"causes": ["a", "b"], "matrix": matrix}},
            "rules": "2.2", "mcmc": {"n_mcmc": 400, "n_burn": 400},
        }));
        let lambda = result.lambda_of("x").unwrap();
        assert!((lambda - want).abs() < 1e-9, "{mmat_type}: λ = {lambda}");
        assert_eq!(
            result.path_correction[0],
            Some(vacal_engine::PathCorrection {
                lambda,
                stalled: true
            }),
            "{mmat_type}"
        );
    }
}

/// §1: η is 0 whenever path correction is on, whatever the request says, and the request's
/// value otherwise.
#[test]
fn path_correction_overrides_the_shrinkage_strength() {
    for (path_correction, want) in [(true, 0.0), (false, 10.0)] {
        let result = result_of(&json!({
            "va_data": {"x": {"a": 25, "b": 75}}, "mmat_type": "fixed",
            "missmat": {"x": {"causes": ["a", "b"], "matrix": [[0.8, 0.2], [0.3, 0.7]]}},
            "path_correction": path_correction, "pshrink_strength": 10.0,
            "mcmc": {"n_mcmc": 400, "n_burn": 400},
        }));
        assert_eq!(result.pshrink_strength, want);
    }
}
