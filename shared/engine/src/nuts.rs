//! NUTS with diagonal mass-matrix adaptation (via nuts-rs) on the posterior of [`ModelSpec`].
//!
//! The diagonal is estimated from the variances of the warm-up draws alone (as Stan does), not
//! with nutpie's default `sqrt(var(draws) / var(gradients))`. On this posterior the two are far
//! apart: the CSMF coordinates near the simplex boundary have a long, exponential tail in
//! log-ratio space and the misclassification rows couple bilinearly to `p`, so the gradient
//! variance overstates the curvature the sampler meets away from the mode. With the draw
//! variance, NUTS takes about twice as many leapfrog steps per draw on ensembles, but the bulk
//! ESS of `p` per draw is three to four times higher (per gradient, twice as efficient);
//! single-algorithm fits are unchanged per gradient.
//!
//! Chain `c` draws its initial position and seeds nuts-rs from a ChaCha8 RNG seeded with
//! `settings.seed` on stream `c`, so the draws do not depend on the number of threads.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use nuts_rs::rand::rngs::ChaCha8Rng;
use nuts_rs::rand::SeedableRng;
use nuts_rs::{Chain, CpuMath, DiagNutsSettings, Settings};

use crate::density::Posterior;
use crate::mcmc::{CancelCheck, ChainDraws, McmcSettings, SamplerError, Samples};
use crate::model::ModelSpec;

/// Iterations between two calls of the cancel check.
const CANCEL_POLL: usize = 50;
/// Random initial positions tried before giving up (Stan also tries 100).
const INIT_TRIES: usize = 100;

/// Samples `p` from the posterior of `spec` with NUTS.
///
/// Every chain runs `warmup_per_chain` adaptation iterations and then
/// `draws_per_chain × thin` iterations, of which every `thin`-th (starting with the first) is
/// kept. Divergences and maximum-tree-depth hits are counted after warm-up; a depth hit is a
/// trajectory of at least `2^max_depth − 1` leapfrog steps, i.e. every doubling up to
/// `max_depth` was integrated (what Stan reports as `treedepth__ == max_depth`).
pub fn sample_nuts(
    spec: &ModelSpec,
    settings: &McmcSettings,
    cancel: CancelCheck,
) -> Result<Samples, SamplerError> {
    run(spec, settings, cancel).map(|(samples, _)| samples)
}

/// Sampler behaviour of one chain (after warm-up unless named so), for tuning and benchmarks.
#[derive(Debug, Clone, Default)]
#[cfg_attr(not(test), allow(dead_code))]
struct ChainStats {
    iterations: u64,
    leapfrog_steps: u64,
    gradients: u64,
    warmup_gradients: u64,
    step_size: f64,
}

enum ChainOutcome {
    Done(ChainDraws, ChainStats),
    Failed(SamplerError),
    /// Stopped because another chain failed or saw the cancellation.
    Aborted,
}

struct Plan<'a> {
    nuts: DiagNutsSettings,
    settings: &'a McmcSettings,
    total_iterations: usize,
    depth_hit_steps: u64,
    cancel: CancelCheck<'a>,
    stop: &'a AtomicBool,
}

fn failed(msg: impl std::fmt::Display) -> SamplerError {
    SamplerError::Failed(msg.to_string())
}

fn validate(settings: &McmcSettings) -> Result<usize, SamplerError> {
    if settings.chains == 0 {
        return Err(failed("chains must be at least 1"));
    }
    if settings.thin == 0 {
        return Err(failed("thin must be at least 1"));
    }
    if !(settings.target_accept > 0.0 && settings.target_accept < 1.0) {
        return Err(failed(format!(
            "target_accept must be in (0, 1), got {}",
            settings.target_accept
        )));
    }
    settings
        .draws_per_chain
        .checked_mul(settings.thin)
        .and_then(|n| n.checked_add(settings.warmup_per_chain))
        .ok_or_else(|| failed("warmup_per_chain + draws_per_chain * thin overflows"))
}

fn run(
    spec: &ModelSpec,
    settings: &McmcSettings,
    cancel: CancelCheck,
) -> Result<(Samples, Vec<ChainStats>), SamplerError> {
    let total_iterations = validate(settings)?;
    let posterior = Posterior::new(spec).map_err(failed)?;

    let defaults = DiagNutsSettings::default();
    let mut adapt_options = defaults.adapt_options;
    adapt_options.step_size_settings.target_accept = settings.target_accept;
    adapt_options.mass_matrix_options.store_mass_matrix = false;
    // See the module documentation.
    adapt_options.mass_matrix_options.use_grad_based_estimate = false;
    let nuts = DiagNutsSettings {
        num_tune: settings.warmup_per_chain as u64,
        num_draws: (total_iterations - settings.warmup_per_chain) as u64,
        maxdepth: settings.max_depth,
        num_chains: settings.chains,
        seed: settings.seed,
        adapt_options,
        // Nothing beyond `Progress` is read, so keep nuts-rs from collecting anything else.
        store_gradient: false,
        store_unconstrained: false,
        store_transformed: false,
        store_divergences: false,
        // Soft clipping (default at |g| = 1e10) makes the dynamics inexact and costs a pass
        // per gradient; this density's gradients are bounded by the counts and prior weights.
        gradient_clipping: None,
        ..defaults
    };

    // A full tree of depth D takes 2^D − 1 leapfrog steps.
    let depth_hit_steps = u32::try_from(settings.max_depth)
        .ok()
        .and_then(|depth| 1u64.checked_shl(depth))
        .map_or(u64::MAX, |size| size - 1);

    let chains = settings.chains;
    let threads = settings
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, chains);

    let stop = AtomicBool::new(false);
    let plan = Plan {
        nuts,
        settings,
        total_iterations,
        depth_hit_steps,
        cancel,
        stop: &stop,
    };
    let next_chain = AtomicUsize::new(0);
    let outcomes: Vec<Mutex<Option<ChainOutcome>>> =
        (0..chains).map(|_| Mutex::new(None)).collect();
    // Each worker owns a copy of the density (it carries scratch buffers, so it is not Sync).
    let worker = |posterior: Posterior| loop {
        let c = next_chain.fetch_add(1, Ordering::Relaxed);
        if c >= chains {
            break;
        }
        let outcome = if stop.load(Ordering::Relaxed) {
            ChainOutcome::Aborted
        } else {
            // A panic inside nuts-rs must not take the caller down with it.
            catch_unwind(AssertUnwindSafe(|| run_chain(&plan, &posterior, c))).unwrap_or_else(
                |panic| {
                    let msg = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".to_string());
                    ChainOutcome::Failed(failed(format!("chain {c} panicked: {msg}")))
                },
            )
        };
        if matches!(outcome, ChainOutcome::Failed(_)) {
            stop.store(true, Ordering::Relaxed);
        }
        if let Ok(mut slot) = outcomes[c].lock() {
            *slot = Some(outcome);
        }
    };
    std::thread::scope(|scope| {
        // The calling thread is one of the workers.
        let worker = &worker;
        for _ in 1..threads {
            let posterior = posterior.clone();
            scope.spawn(move || worker(posterior));
        }
        worker(posterior.clone());
    });

    let mut draws = Vec::with_capacity(chains);
    let mut stats = Vec::with_capacity(chains);
    let mut first_error = None;
    for slot in outcomes {
        match slot.into_inner().ok().flatten() {
            Some(ChainOutcome::Done(d, s)) => {
                draws.push(d);
                stats.push(s);
            }
            Some(ChainOutcome::Failed(err)) => {
                first_error.get_or_insert(err);
            }
            Some(ChainOutcome::Aborted) | None => {}
        }
    }
    if let Some(err) = first_error {
        return Err(err);
    }
    if draws.len() != chains {
        return Err(failed("a chain stopped without a result"));
    }
    Ok((Samples { chains: draws }, stats))
}

fn run_chain(plan: &Plan, posterior: &Posterior, c: usize) -> ChainOutcome {
    match run_chain_inner(plan, posterior, c) {
        Ok(Some((draws, stats))) => ChainOutcome::Done(draws, stats),
        Ok(None) => ChainOutcome::Aborted,
        Err(err) => ChainOutcome::Failed(err),
    }
}

/// `Ok(None)`: stopped because another chain failed.
fn run_chain_inner(
    plan: &Plan,
    template: &Posterior,
    c: usize,
) -> Result<Option<(ChainDraws, ChainStats)>, SamplerError> {
    let settings = plan.settings;
    let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
    rng.set_stream(c as u64);

    let posterior = template.clone();
    let dim = posterior.dim();
    let d = posterior.num_causes();
    let mut init = vec![0.0; dim];
    let mut grad = vec![0.0; dim];
    let mut found = false;
    for _ in 0..INIT_TRIES {
        posterior.random_position(&mut rng, &mut init);
        let lp = posterior.logp_and_grad(&init, &mut grad);
        if lp.is_finite() && grad.iter().all(|g| g.is_finite()) {
            found = true;
            break;
        }
    }
    if !found {
        return Err(failed(format!(
            "chain {c}: no finite log posterior at {INIT_TRIES} random initial positions"
        )));
    }

    let math = CpuMath::new(posterior);
    let mut chain = plan
        .nuts
        .new_chain(c as u64, math, &mut rng)
        .map_err(|e| failed(format!("chain {c}: {e:#}")))?;
    chain
        .set_position(&init)
        .map_err(|e| failed(format!("chain {c}: initialisation: {e:#}")))?;

    let warmup = settings.warmup_per_chain;
    let mut out = ChainDraws {
        draws: Vec::with_capacity(settings.draws_per_chain),
        divergences: 0,
        max_depth_hits: 0,
    };
    let mut stats = ChainStats::default();
    for it in 0..plan.total_iterations {
        if it.is_multiple_of(CANCEL_POLL) {
            if plan.stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            if (plan.cancel)() {
                plan.stop.store(true, Ordering::Relaxed);
                return Err(SamplerError::Cancelled);
            }
        }
        let (position, progress) = chain
            .draw()
            .map_err(|e| failed(format!("chain {c}, iteration {it}: {e:#}")))?;
        if it < warmup {
            stats.warmup_gradients += progress.num_gradients;
            continue;
        }
        out.divergences += usize::from(progress.diverging);
        out.max_depth_hits += usize::from(progress.num_steps >= plan.depth_hit_steps);
        stats.iterations += 1;
        stats.leapfrog_steps += progress.num_steps;
        stats.gradients += progress.num_gradients;
        stats.step_size = progress.step_size;
        if (it - warmup).is_multiple_of(settings.thin) {
            let mut p = vec![0.0; d];
            template.p_from_position(&position, &mut p);
            out.draws.push(p);
        }
    }
    Ok(Some((out, stats)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AlgorithmTerm, Misclassification};

    fn never() -> bool {
        false
    }

    fn settings(chains: usize, warmup: usize, draws: usize, seed: u64) -> McmcSettings {
        McmcSettings {
            chains,
            warmup_per_chain: warmup,
            draws_per_chain: draws,
            thin: 1,
            seed,
            target_accept: 0.9,
            max_depth: 10,
            threads: None,
        }
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
        let calls = AtomicUsize::new(0);
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
        let est_sd =
            (draws.iter().map(|x| (x - est).powi(2)).sum::<f64>() / draws.len() as f64).sqrt();
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

    /// The single-algorithm fit runs on the calibrated sub-problem (d = |S| = 5).
    fn single_spec() -> ModelSpec {
        let mut spec = dirichlet_spec();
        spec.p_prior.truncate(5);
        let term = &mut spec.terms[0];
        term.counts = vec![250.0, 120.0, 310.0, 90.0, 130.0];
        term.calibrated = vec![true; 5];
        if let Misclassification::Dirichlet(alpha) = &mut term.misclassification {
            alpha.truncate(5);
            alpha.iter_mut().for_each(|row| row.truncate(5));
        }
        spec
    }

    /// Cost of one density evaluation on the target problems; run with
    /// `cargo test --release -p vacal-engine --lib nuts::tests::timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn timing_density() {
        for (name, spec) in [("single", single_spec()), ("ensemble", ensemble_spec())] {
            let post = Posterior::new(&spec).unwrap();
            let dim = post.dim();
            let (mut y, mut g) = (vec![0.3; dim], vec![0.0; dim]);
            let evals = 100_000;
            let mut best = f64::INFINITY;
            for _ in 0..5 {
                let start = std::time::Instant::now();
                for k in 0..evals {
                    y[k % dim] += 1e-9;
                    std::hint::black_box(post.logp_and_grad(&y, &mut g));
                }
                best = best.min(start.elapsed().as_secs_f64() * 1e9 / evals as f64);
            }
            println!("{name} ({dim} dims): {best:.0} ns per logp_and_grad (best of 5)");
        }
    }

    /// Wall time of the target problems (4 chains × (1250 + 1250)), on all cores and on one.
    #[test]
    #[ignore]
    fn timing_sampler() {
        for (name, spec) in [("single", single_spec()), ("ensemble", ensemble_spec())] {
            let dim = Posterior::new(&spec).unwrap().dim();
            for threads in [None, Some(1)] {
                let s = McmcSettings {
                    threads,
                    ..settings(4, 1250, 1250, 1)
                };
                let mut times = vec![];
                let mut last = None;
                for _ in 0..5 {
                    let start = std::time::Instant::now();
                    last = Some(run(&spec, &s, &never).unwrap());
                    times.push(start.elapsed().as_secs_f64() * 1e3);
                }
                times.sort_by(f64::total_cmp);
                let (samples, stats) = last.unwrap();
                let iters: u64 = stats.iter().map(|s| s.iterations).sum();
                let per = |f: fn(&ChainStats) -> u64| {
                    stats.iter().map(f).sum::<u64>() as f64 / iters as f64
                };
                let div: usize = samples.chains.iter().map(|c| c.divergences).sum();
                let hits: usize = samples.chains.iter().map(|c| c.max_depth_hits).sum();
                let ess = crate::diagnostics::diagnose_samples(&samples).min_ess_bulk;
                let step_sizes: Vec<String> = stats
                    .iter()
                    .map(|s| format!("{:.3}", s.step_size))
                    .collect();
                println!(
                    "{name} ({dim} dims), threads {threads:?}: min {:.1} ms, median {:.1} ms; \
                     per draw {:.2} leapfrog steps / {:.2} gradients (warm-up {:.2}); \
                     step sizes {step_sizes:?}; divergences {div}, depth hits {hits}; \
                     min bulk ESS {ess:.0}",
                    times[0],
                    times[2],
                    per(|s| s.leapfrog_steps),
                    per(|s| s.gradients),
                    per(|s| s.warmup_gradients),
                );
            }
        }
    }
}
