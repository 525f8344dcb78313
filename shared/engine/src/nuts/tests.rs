use rand_distr::{Distribution, StandardNormal};

use super::adaptation::{MetricAdaptation, StepSizeAdaptation};
use super::kernels::{leaf, leaf_impl, merge, merge_impl, Halves, LeafOut};
use super::*;
use crate::density::dot;
use crate::model::{AlgorithmTerm, Misclassification};

fn never() -> bool {
    false
}

fn random_vector(n: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}

/// The fused tree bookkeeping (every path this CPU has) gives the bits of the passes it
/// replaced: copies, sums and `dot`.
#[test]
fn fused_leaf_and_merge_match_the_separate_passes() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for n in (1..=13).chain([57, 136]) {
        let mut v = || random_vector(n, &mut rng);
        let (p, inv_metric, rho0) = (v(), v(), v());
        let (mut sb, mut se, mut rho, mut pb, mut pe) = (v(), v(), rho0.clone(), v(), v());
        let twice_kinetic = leaf(
            &p,
            &inv_metric,
            LeafOut {
                p_sharp_beg: &mut sb,
                p_sharp_end: &mut se,
                rho: &mut rho,
                p_beg: &mut pb,
                p_end: &mut pe,
            },
        );
        let sharp: Vec<f64> = p.iter().zip(&inv_metric).map(|(p, m)| p * m).collect();
        assert_eq!((&sb, &se, &pb, &pe), (&sharp, &sharp, &p, &p), "n = {n}");
        let summed: Vec<f64> = rho0.iter().zip(&p).map(|(r, p)| r + p).collect();
        assert_eq!(rho, summed, "n = {n}");
        assert_eq!(
            twice_kinetic.to_bits(),
            dot(&p, &sharp).to_bits(),
            "n = {n}"
        );
        let mut plain = rho0.clone();
        let (mut b1, mut b2, mut b3, mut b4) = (v(), v(), v(), v());
        let plain_twice_kinetic = leaf_impl(
            &p,
            &inv_metric,
            LeafOut {
                p_sharp_beg: &mut b1,
                p_sharp_end: &mut b2,
                rho: &mut plain,
                p_beg: &mut b3,
                p_end: &mut b4,
            },
        );
        assert_eq!(
            plain_twice_kinetic.to_bits(),
            twice_kinetic.to_bits(),
            "n = {n}"
        );
        assert_eq!(
            (&b1, &b2, &plain, &b3, &b4),
            (&sb, &se, &rho, &pb, &pe),
            "n = {n}"
        );

        let (ri, rf, pie, pfb, sb, sie, sfb, se) = (v(), v(), v(), v(), v(), v(), v(), v());
        let halves = Halves {
            rho_init: &ri,
            rho_final: &rf,
            p_init_end: &pie,
            p_final_beg: &pfb,
            p_sharp_beg: &sb,
            p_sharp_init_end: &sie,
            p_sharp_final_beg: &sfb,
            p_sharp_end: &se,
        };
        let mut rho = rho0.clone();
        let sums = merge(&halves, &mut rho);
        let mut plain_rho = rho0.clone();
        let plain_sums = merge_impl(&halves, &mut plain_rho);
        let add =
            |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(x, y)| x + y).collect() };
        let (whole, init, fin) = (add(&ri, &rf), add(&ri, &pfb), add(&rf, &pie));
        let expected = [
            dot(&se, &whole),
            dot(&sb, &whole),
            dot(&sfb, &init),
            dot(&sb, &init),
            dot(&se, &fin),
            dot(&sie, &fin),
        ];
        for (got, want) in [sums, plain_sums]
            .iter()
            .flat_map(|s| s.iter().zip(&expected))
        {
            assert_eq!(got.to_bits(), want.to_bits(), "n = {n}");
        }
        assert_eq!(rho, add(&rho0, &whole), "n = {n}");
        assert_eq!(plain_rho, rho, "n = {n}");
    }
}

fn settings(chains: usize, warmup: usize, draws: usize, seed: u64) -> McmcSettings {
    crate::mcmc::test_settings(chains, warmup, draws, seed)
}

fn identity(d: usize) -> Vec<Vec<f64>> {
    (0..d)
        .map(|i| (0..d).map(|j| f64::from(u8::from(i == j))).collect())
        .collect()
}

/// Beta(a, b) quantile by numerically integrating the density (a, b ≥ 1: no singularity).
fn beta_quantile(a: f64, b: f64, prob: f64) -> f64 {
    let n = 200_000;
    let h = 1.0 / n as f64;
    let dens = |x: f64| ((a - 1.0) * x.ln() + (b - 1.0) * (1.0 - x).ln()).exp();
    let mut cdf = vec![0.0; n + 1];
    let mut prev = dens(0.0);
    for k in 1..=n {
        let cur = dens(k as f64 * h);
        cdf[k] = cdf[k - 1] + 0.5 * h * (prev + cur);
        prev = cur;
    }
    let target = prob * cdf[n];
    let k = cdf.partition_point(|&v| v < target).max(1);
    let frac = (target - cdf[k - 1]) / (cdf[k] - cdf[k - 1]);
    (k as f64 - 1.0 + frac) * h
}

fn sorted_quantile(sorted: &[f64], prob: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * prob;
    let lo = h.floor() as usize;
    let hi = h.ceil() as usize;
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

fn identity_spec() -> (ModelSpec, Vec<f64>) {
    let gamma = vec![1.0, 2.0, 1.5, 1.0];
    let counts = vec![30.0, 55.0, 0.0, 12.0];
    let d = gamma.len();
    let spec = ModelSpec {
        p_prior: gamma.clone(),
        terms: vec![AlgorithmTerm {
            counts: counts.clone(),
            calibrated: vec![true; d],
            misclassification: Misclassification::Fixed(identity(d)),
        }],
    };
    let post: Vec<f64> = gamma.iter().zip(&counts).map(|(g, c)| g + c).collect();
    (spec, post)
}

/// Stan's schedule for 1000 warm-up iterations: a 75-iteration buffer, windows of 25, 50,
/// 100 and 200, the last stretched to 500 to meet the 50-iteration final buffer.
#[test]
fn metric_windows_follow_stan() {
    let mut adapt = MetricAdaptation::new(1000, 1);
    let mut metric = [1.0];
    let updates: Vec<usize> = (0..1000)
        .filter(|&it| adapt.learn(&[it as f64], &mut metric))
        .collect();
    assert_eq!(updates, vec![99, 149, 249, 449, 949]);
    // The last window saw iterations 450..=949: variance of 500 consecutive integers,
    // shrunk as Stan does.
    let var = (500.0f64 * 500.0 - 1.0) / 12.0 * 500.0 / 499.0;
    let want = 500.0 / 505.0 * var + 1e-3 * 5.0 / 505.0;
    assert!(
        (metric[0] - want).abs() < 1e-9 * want,
        "{} vs {want}",
        metric[0]
    );
    // Short warm-ups use 15 % / 75 % / 10 %; below 20 iterations there is no estimate.
    let mut short = MetricAdaptation::new(100, 1);
    let updates: Vec<usize> = (0..100)
        .filter(|&it| short.learn(&[it as f64], &mut metric))
        .collect();
    assert_eq!(updates, vec![89]);
    let mut tiny = MetricAdaptation::new(19, 1);
    assert!((0..19).all(|it| !tiny.learn(&[it as f64], &mut metric)));
}

/// Dual averaging settles where the acceptance statistic meets the target.
#[test]
fn step_size_adaptation_reaches_the_target() {
    // A toy acceptance curve: accept = exp(-step size).
    let mut adapt = StepSizeAdaptation::new(0.8);
    adapt.restart(1.0);
    let mut eps = 1.0f64;
    for _ in 0..2000 {
        eps = adapt.learn((-eps).exp());
    }
    let want = -(0.8f64.ln());
    assert!(
        (adapt.final_step_size() - want).abs() < 0.01,
        "{}",
        adapt.final_step_size()
    );
}

#[test]
fn identity_fixed_term_gives_conjugate_dirichlet() {
    let (spec, a) = identity_spec();
    let samples = sample_nuts(&spec, &settings(4, 500, 1000, 7), &never).unwrap();
    assert_eq!(samples.chains.len(), 4);
    let a0: f64 = a.iter().sum();
    for (i, &ai) in a.iter().enumerate() {
        let mut xs: Vec<f64> = samples
            .chains
            .iter()
            .flat_map(|ch| ch.draws.iter().map(move |p| p[i]))
            .collect();
        assert_eq!(xs.len(), 4000);
        let (b, mean) = (a0 - ai, ai / a0);
        let sd = (ai * b / (a0 * a0 * (a0 + 1.0))).sqrt();
        // Tolerances of about five Monte Carlo standard errors at an ESS of 1000.
        let est = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((est - mean).abs() < 0.15 * sd, "mean {i}: {est} vs {mean}");
        xs.sort_by(f64::total_cmp);
        for prob in [0.025, 0.975] {
            let exact = beta_quantile(ai, b, prob);
            let est = sorted_quantile(&xs, prob);
            assert!(
                (est - exact).abs() < 0.4 * sd,
                "quantile {prob} of {i}: {est} vs {exact}"
            );
        }
    }
}

/// NUTS lays the causes out by their deaths, not by their labels: relabelling the causes
/// relabels the draws and changes nothing else.
#[test]
fn draws_do_not_depend_on_the_labels_of_the_causes() {
    let spec = dirichlet_spec();
    let order = [3, 0, 5, 1, 4, 2];
    let s = settings(2, 150, 100, 5);
    let original = sample_nuts(&spec, &s, &never).unwrap();
    let relabelled = sample_nuts(&spec.relabelled(&order), &s, &never).unwrap();
    for (a, b) in original.chains.iter().zip(&relabelled.chains) {
        assert_eq!(a.draws.len(), 100);
        for (x, y) in a.draws.iter().zip(&b.draws) {
            let x_relabelled: Vec<f64> = order.iter().map(|&j| x[j]).collect();
            assert_eq!(&x_relabelled, y);
        }
    }
}

#[test]
fn reproducible_across_thread_counts() {
    let (spec, _) = identity_spec();
    let mut s = settings(3, 200, 100, 42);
    s.thin = 2;
    s.threads = Some(1);
    let one = sample_nuts(&spec, &s, &never).unwrap();
    s.threads = Some(2);
    let two = sample_nuts(&spec, &s, &never).unwrap();
    assert_eq!(one, two);
    assert!(one.chains.iter().all(|c| c.draws.len() == 100));
    assert_ne!(one.chains[0].draws, one.chains[1].draws);
    s.seed = 43;
    let other = sample_nuts(&spec, &s, &never).unwrap();
    assert_ne!(one.chains[0].draws, other.chains[0].draws);
}

#[test]
fn cancel_stops_the_run() {
    let (spec, _) = identity_spec();
    let s = settings(2, 1000, 1000, 1);
    assert_eq!(
        sample_nuts(&spec, &s, &|| true),
        Err(SamplerError::Cancelled)
    );
    // Cancelling midway also stops every chain.
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let later = || calls.fetch_add(1, Ordering::Relaxed) >= 5;
    assert_eq!(sample_nuts(&spec, &s, &later), Err(SamplerError::Cancelled));
}

fn dirichlet_spec() -> ModelSpec {
    let d = 6;
    let calibrated = vec![true, true, true, true, true, false];
    let alpha = (0..d)
        .map(|i| {
            (0..d)
                .map(|j| {
                    if i == j {
                        20.0
                    } else {
                        1.0 + ((i * 7 + j * 3) % 5) as f64
                    }
                })
                .collect()
        })
        .collect();
    ModelSpec {
        p_prior: vec![1.0; d],
        terms: vec![AlgorithmTerm {
            counts: vec![250.0, 120.0, 310.0, 90.0, 160.0, 40.0],
            calibrated,
            misclassification: Misclassification::Dirichlet(alpha),
        }],
    }
}

#[test]
fn dirichlet_term_samples_cleanly() {
    let spec = dirichlet_spec();
    let samples = sample_nuts(&spec, &settings(4, 500, 500, 3), &never).unwrap();
    for chain in &samples.chains {
        assert_eq!(chain.divergences, 0);
        assert_eq!(chain.max_depth_hits, 0);
        assert_eq!(chain.draws.len(), 500);
        for p in &chain.draws {
            assert_eq!(p.len(), 6);
            assert!(p.iter().all(|&x| (0.0..=1.0).contains(&x)));
            assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }
}

/// A two-cause Dirichlet-term model against its posterior mean by quadrature over
/// (p_0, θ_00, θ_10).
#[test]
fn dirichlet_term_matches_quadrature() {
    let (gamma, alpha, counts) = ([1.5, 1.0], [[8.0, 2.0], [3.0, 6.0]], [30.0, 20.0]);
    let spec = ModelSpec {
        p_prior: gamma.to_vec(),
        terms: vec![AlgorithmTerm {
            counts: counts.to_vec(),
            calibrated: vec![true; 2],
            misclassification: Misclassification::Dirichlet(
                alpha.iter().map(|r| r.to_vec()).collect(),
            ),
        }],
    };
    let n = 100;
    let h = 1.0 / n as f64;
    let log_density = |p: f64, a: f64, b: f64| {
        let q0 = p * a + (1.0 - p) * b;
        (gamma[0] - 1.0) * p.ln()
            + (gamma[1] - 1.0) * (1.0 - p).ln()
            + (alpha[0][0] - 1.0) * a.ln()
            + (alpha[0][1] - 1.0) * (1.0 - a).ln()
            + (alpha[1][0] - 1.0) * b.ln()
            + (alpha[1][1] - 1.0) * (1.0 - b).ln()
            + counts[0] * q0.ln()
            + counts[1] * (1.0 - q0).ln()
    };
    let (mut mass, mut first, mut second) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let p = (i as f64 + 0.5) * h;
        for j in 0..n {
            let a = (j as f64 + 0.5) * h;
            for k in 0..n {
                let b = (k as f64 + 0.5) * h;
                // The shift keeps exp in range; it cancels in the ratios.
                let w = (log_density(p, a, b) + 35.0).exp();
                mass += w;
                first += w * p;
                second += w * p * p;
            }
        }
    }
    let mean = first / mass;
    let sd = (second / mass - mean * mean).sqrt();
    let samples = sample_nuts(&spec, &settings(4, 500, 1000, 11), &never).unwrap();
    let draws: Vec<f64> = samples
        .chains
        .iter()
        .flat_map(|c| c.draws.iter().map(|p| p[0]))
        .collect();
    let est = draws.iter().sum::<f64>() / draws.len() as f64;
    let est_sd = (draws.iter().map(|x| (x - est).powi(2)).sum::<f64>() / draws.len() as f64).sqrt();
    // About five Monte Carlo standard errors at an ESS of 1000.
    assert!((est - mean).abs() < 0.15 * sd, "mean {est} vs {mean}");
    assert!((est_sd - sd).abs() < 0.15 * sd, "sd {est_sd} vs {sd}");
}

#[test]
fn invalid_input_is_an_error() {
    let (spec, _) = identity_spec();
    let bad_spec = ModelSpec {
        p_prior: vec![1.0; 3],
        ..spec.clone()
    };
    let s = settings(1, 10, 10, 0);
    assert!(matches!(
        sample_nuts(&bad_spec, &s, &never),
        Err(SamplerError::Failed(_))
    ));
    for bad in [
        McmcSettings {
            chains: 0,
            ..s.clone()
        },
        McmcSettings {
            thin: 0,
            ..s.clone()
        },
        McmcSettings {
            target_accept: 1.0,
            ..s.clone()
        },
        McmcSettings {
            draws_per_chain: usize::MAX,
            thin: 2,
            ..s.clone()
        },
    ] {
        assert!(matches!(
            sample_nuts(&spec, &bad, &never),
            Err(SamplerError::Failed(_))
        ));
    }
    // Degenerate but valid run lengths.
    let empty = sample_nuts(
        &spec,
        &McmcSettings {
            warmup_per_chain: 0,
            draws_per_chain: 0,
            ..s.clone()
        },
        &never,
    )
    .unwrap();
    assert!(empty.chains[0].draws.is_empty());
    let no_warmup = McmcSettings {
        warmup_per_chain: 0,
        ..s
    };
    assert_eq!(
        sample_nuts(&spec, &no_warmup, &never).unwrap().chains[0]
            .draws
            .len(),
        10
    );
}

fn ensemble_spec() -> ModelSpec {
    let d = 9;
    let terms = (0..3)
        .map(|k| {
            let alpha = (0..d)
                .map(|i| {
                    (0..d)
                        .map(|j| {
                            if i == j {
                                20.0
                            } else {
                                1.0 + ((i * 5 + j * 3 + k) % 5) as f64
                            }
                        })
                        .collect()
                })
                .collect();
            AlgorithmTerm {
                counts: (0..d)
                    .map(|j| 40.0 + ((j * 37 + k * 11) % 90) as f64)
                    .collect(),
                calibrated: (0..d).map(|j| j != (k + 2) % d).collect(),
                misclassification: Misclassification::Dirichlet(alpha),
            }
        })
        .collect();
    ModelSpec {
        p_prior: vec![1.0; d],
        terms,
    }
}

#[test]
fn warm_up_trees_are_capped_and_sampling_trees_are_not() {
    let spec = ensemble_spec();
    let (_, stats) = run(&spec, &settings(2, 300, 200, 3), &never).unwrap();
    for chain in &stats {
        assert!(
            chain.warmup_max_depth <= WARMUP_MAX_DEPTH as usize,
            "{chain:?}"
        );
        // This posterior needs depth-5 trees (31 leapfrog steps) once adapted.
        assert!(chain.max_depth > WARMUP_MAX_DEPTH as usize, "{chain:?}");
    }
    // A smaller limit from the settings holds in warm-up too.
    let shallow = McmcSettings {
        max_depth: 2,
        ..settings(1, 100, 50, 3)
    };
    let (_, stats) = run(&spec, &shallow, &never).unwrap();
    assert!(stats[0].warmup_max_depth <= 2 && stats[0].max_depth <= 2);
}
