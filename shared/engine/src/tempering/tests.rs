use super::*;
use crate::diagnostics::diagnose_samples;
use crate::model::{AlgorithmTerm, Misclassification};
use crate::nuts::{chain_rng, sample_nuts};

fn never() -> bool {
    false
}

/// Two threads, whatever the machine: the tests compare thread counts.
fn settings(chains: usize, warmup: usize, draws: usize, seed: u64) -> McmcSettings {
    McmcSettings {
        threads: Some(2),
        ..crate::mcmc::test_settings(chains, warmup, draws, seed)
    }
}

/// Two causes, two algorithms that agree on the data (90 % of deaths are VA cause 0) but whose
/// misclassification priors disagree: algorithm A is believed accurate, B believed to swap the
/// causes. Either p ≈ (0.9, 0.1) with B's matrix pulled away from its prior, or p ≈ (0.1, 0.9)
/// with A's: two modes, and a valley between them where both matrices must bend.
/// `p_prior` weighs the modes.
fn bimodal_spec(p_prior: [f64; 2]) -> ModelSpec {
    let term = |alpha: [[f64; 2]; 2]| AlgorithmTerm {
        counts: vec![900.0, 100.0],
        calibrated: vec![true, true],
        misclassification: Misclassification::Dirichlet(
            alpha.iter().map(|row| row.to_vec()).collect(),
        ),
    };
    ModelSpec {
        p_prior: p_prior.to_vec(),
        terms: vec![
            term([[18.0, 2.0], [2.0, 18.0]]),
            term([[2.0, 18.0], [18.0, 2.0]]),
        ],
    }
}

fn ln_beta_density(x: f64, a: f64, b: f64) -> f64 {
    (a - 1.0) * x.ln() + (b - 1.0) * (1.0 - x).ln()
}

/// The posterior of `x = p_0` under [`bimodal_spec`] by quadrature: for each `x` on a grid,
/// each algorithm's likelihood integrated over its two matrix rows (midpoint rule), times the
/// prior of `x`. Returns `(P(x > 1/2), E[x])`.
fn quadrature(spec: &ModelSpec) -> (f64, f64) {
    const NX: usize = 400;
    const NT: usize = 200;
    let grid = |n: usize| -> Vec<f64> { (0..n).map(|i| (i as f64 + 0.5) / n as f64).collect() };
    let (xs, ts) = (grid(NX), grid(NT));
    let log_f = |x: f64, term: &AlgorithmTerm| -> f64 {
        let Misclassification::Dirichlet(alpha) = &term.misclassification else {
            unreachable!()
        };
        let (a, b) = (term.counts[0], term.counts[1]);
        // θ0 = M[0][0] and θ1 = M[1][1]; P(VA cause 0) = x θ0 + (1 − x)(1 − θ1).
        let mut logs = Vec::with_capacity(NT * NT);
        for &t0 in &ts {
            let p0 = ln_beta_density(t0, alpha[0][0], alpha[0][1]);
            for &t1 in &ts {
                let q = x * t0 + (1.0 - x) * (1.0 - t1);
                logs.push(
                    p0 + ln_beta_density(t1, alpha[1][1], alpha[1][0])
                        + a * q.ln()
                        + b * (1.0 - q).ln(),
                );
            }
        }
        let m = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        m + logs.iter().map(|l| (l - m).exp()).sum::<f64>().ln()
    };
    let logs: Vec<f64> = xs
        .iter()
        .map(|&x| {
            ln_beta_density(x, spec.p_prior[0], spec.p_prior[1])
                + spec.terms.iter().map(|t| log_f(x, t)).sum::<f64>()
        })
        .collect();
    let m = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = logs.iter().map(|l| (l - m).exp()).collect();
    let total: f64 = w.iter().sum();
    let upper: f64 = xs
        .iter()
        .zip(&w)
        .filter(|(x, _)| **x > 0.5)
        .map(|(_, w)| w)
        .sum();
    let mean: f64 = xs.iter().zip(&w).map(|(x, w)| x * w).sum();
    (upper / total, mean / total)
}

/// Per chain, the share of its draws with `p_0 > 1/2` (in the mode where A is right).
fn upper_share(samples: &Samples) -> Vec<f64> {
    samples
        .chains
        .iter()
        .map(|c| c.draws.iter().filter(|d| d[0] > 0.5).count() as f64 / c.draws.len() as f64)
        .collect()
}

/// The ladder the toy needs: its misclassification priors alone keep the modes apart until
/// the likelihood is nearly flat (β ≈ 0.05), unlike the Kenya ensemble's.
fn toy_ladder() -> Vec<f64> {
    geometric_ladder(8, 0.01)
}

fn pooled(samples: &Samples, i: usize) -> Vec<f64> {
    samples
        .chains
        .iter()
        .flat_map(|c| c.draws.iter().map(move |d| d[i]))
        .collect()
}

fn mean_and_sd(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

#[test]
fn nuts_chains_stay_in_their_modes_and_tempering_weighs_them() {
    let spec = bimodal_spec([2.0, 1.5]);
    let (upper, mean) = quadrature(&spec);
    // The prior of p tilts the symmetric pair of modes 4 : 1 or so towards p_0 ≈ 0.9.
    assert!((0.75..0.83).contains(&upper), "{upper}");
    let s = settings(4, 1000, 2000, 1);

    let nuts = sample_nuts(&spec, &s, &never).unwrap();
    let shares = upper_share(&nuts);
    // Every NUTS chain keeps to the mode it found first: one of the chains sits in the lower
    // mode, and no chain ever crosses.
    assert!(shares.iter().all(|&x| x == 0.0 || x == 1.0), "{shares:?}");
    assert!(shares.contains(&0.0) && shares.contains(&1.0), "{shares:?}");
    let nuts_diag = diagnose_samples(&nuts);
    assert!(nuts_diag.max_rhat > 1.3, "{nuts_diag:?}");
    assert_eq!(multimodal_coordinates(&nuts, &nuts_diag), [0, 1]);

    let (pt, stats) = run(&spec, &toy_ladder(), &s, &never).unwrap();
    let diag = diagnose_samples(&pt);
    assert!(diag.max_rhat < 1.03, "{diag:?}");
    assert!(multimodal_coordinates(&pt, &diag).is_empty());
    let x = pooled(&pt, 0);
    let (pt_mean, sd) = mean_and_sd(&x);
    let mcse = sd / diag.per_coordinate[0].ess_bulk.sqrt();
    assert!(
        (pt_mean - mean).abs() < 4.0 * mcse,
        "mean {pt_mean} vs {mean} (MCSE {mcse})"
    );
    let share = x.iter().filter(|&&v| v > 0.5).count() as f64 / x.len() as f64;
    // The mode indicator is a mean too; its MCSE is about that of p_0 over the modes' gap.
    let share_mcse = (upper * (1.0 - upper) / diag.per_coordinate[0].ess_bulk).sqrt();
    assert!(
        (share - upper).abs() < 4.0 * share_mcse,
        "share {share} vs {upper} (MCSE {share_mcse})"
    );
    // Every chain visits both modes, and states travel the whole ladder.
    assert!(
        upper_share(&pt).iter().all(|&x| 0.4 < x && x < 0.98),
        "{:?}",
        upper_share(&pt)
    );
    for chain in &stats {
        assert!(chain.round_trips >= 5, "{chain:?}");
        assert!(chain.acceptance().iter().all(|&a| a > 0.02), "{chain:?}");
    }
}

/// A conjugate model: a fixed identity matrix makes the posterior Dirichlet(prior + counts).
/// The tempered replicas are Dirichlet(prior + β counts), so any error in the swaps' acceptance
/// ratio would shift the β = 1 draws towards the prior.
#[test]
fn swaps_leave_the_posterior_unchanged() {
    let d = 4;
    let identity: Vec<Vec<f64>> = (0..d)
        .map(|i| (0..d).map(|j| f64::from(u8::from(i == j))).collect())
        .collect();
    let prior = [1.0, 2.0, 1.0, 3.0];
    let counts = [30.0, 5.0, 60.0, 10.0];
    let spec = ModelSpec {
        p_prior: prior.to_vec(),
        terms: vec![AlgorithmTerm {
            counts: counts.to_vec(),
            calibrated: vec![true; d],
            misclassification: Misclassification::Fixed(identity),
        }],
    };
    let (pt, stats) = run(
        &spec,
        &geometric_ladder(5, 0.01),
        &settings(4, 500, 2000, 3),
        &never,
    )
    .unwrap();
    // Swaps do happen, across the whole ladder.
    assert!(
        stats
            .iter()
            .all(|c| c.acceptance().iter().all(|&a| a > 0.2)),
        "{stats:?}"
    );
    let diag = diagnose_samples(&pt);
    let total: f64 = prior.iter().sum::<f64>() + counts.iter().sum::<f64>();
    for j in 0..d {
        let exact = (prior[j] + counts[j]) / total;
        let (mean, sd) = mean_and_sd(&pooled(&pt, j));
        let mcse = sd / diag.per_coordinate[j].ess_bulk.sqrt();
        assert!(
            (mean - exact).abs() < 4.0 * mcse,
            "cause {j}: {mean} vs {exact}"
        );
    }
}

#[test]
fn reproducible_across_thread_counts() {
    let spec = bimodal_spec([1.0, 1.0]);
    let mut s = settings(3, 100, 60, 11);
    s.thin = 2;
    s.threads = Some(1);
    let sampler = TemperingSampler::default();
    let one = sampler.sample(&spec, &s, &never).unwrap();
    s.threads = Some(3);
    let three = sampler.sample(&spec, &s, &never).unwrap();
    assert_eq!(one, three);
    assert!(one.chains.iter().all(|c| c.draws.len() == 60));
    assert_ne!(one.chains[0].draws, one.chains[1].draws);
    s.seed = 12;
    let other = sampler.sample(&spec, &s, &never).unwrap();
    assert_ne!(one.chains[0].draws, other.chains[0].draws);
}

#[test]
fn cancel_stops_the_run() {
    let spec = bimodal_spec([1.0, 1.0]);
    let s = settings(2, 1000, 100_000, 1);
    let sampler = TemperingSampler::default();
    assert_eq!(
        sampler.sample(&spec, &s, &|| true),
        Err(SamplerError::Cancelled)
    );
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let later = || calls.fetch_add(1, Ordering::Relaxed) >= 5;
    let started = std::time::Instant::now();
    assert_eq!(
        sampler.sample(&spec, &s, &later),
        Err(SamplerError::Cancelled)
    );
    assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
}

#[test]
fn the_ladder_is_geometric_and_checked() {
    let ladder = geometric_ladder(3, 0.04);
    assert_eq!(ladder.len(), 3);
    assert_eq!(ladder[0], 1.0);
    assert!((ladder[1] - 0.2).abs() < 1e-12 && (ladder[2] - 0.04).abs() < 1e-12);
    assert_eq!(geometric_ladder(1, 0.5), [1.0]);
    let default = TemperingSampler::default().ladder;
    assert_eq!(default.len(), RUNGS);
    assert!((default[RUNGS - 1] - MIN_BETA).abs() < 1e-12);

    let spec = bimodal_spec([1.0, 1.0]);
    let s = settings(1, 10, 10, 1);
    for bad in [vec![], vec![0.5, 0.2], vec![1.0, 1.0], vec![1.0, 0.0]] {
        assert!(
            matches!(run(&spec, &bad, &s, &never), Err(SamplerError::Failed(_))),
            "{bad:?}"
        );
    }
    let hot = tempered(&spec, 0.25);
    assert_eq!(hot.terms[0].counts, [225.0, 25.0]);
    assert_eq!(hot.p_prior, spec.p_prior);
}

#[test]
fn separation_tells_one_group_from_two() {
    let mut rng = chain_rng(5, 0);
    let normal: Vec<f64> = (0..4000)
        .map(|_| rand_distr::Distribution::<f64>::sample(&rand_distr::StandardNormal, &mut rng))
        .collect();
    let d = separation(&normal);
    assert!((2.4..2.9).contains(&d), "{d}");
    let two: Vec<f64> = normal
        .iter()
        .enumerate()
        .map(|(i, x)| if i % 3 == 0 { x + 8.0 } else { *x })
        .collect();
    assert!(separation(&two) > 6.0, "{}", separation(&two));
    assert!(separation(&[1.0, 2.0, 3.0]).is_nan());
}
