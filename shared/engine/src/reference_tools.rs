//! Reference computations that check the production samplers, compiled only with the
//! `reference-tools` feature (and in the crate's own tests): the service never runs them.
//!
//! # Data-fraction parallel tempering on the Gibbs sampler
//!
//! Some posteriors have well-separated modes (the neonatal Kenya ensemble without path
//! correction: "sepsis high" and "pneumonia high"), and neither NUTS nor the Gibbs sampler of
//! `gibbs.rs` moves between them within a practical run. [`ensemble_reference`] computes the
//! ensemble's reported posterior mean with a method that shares neither the kernel nor the
//! tempering family of a NUTS-based tempering fallback, so that agreement between the two means
//! something:
//!
//! - **Kernel**: one data-augmentation Gibbs sweep per replica per round (`gibbs.rs`).
//! - **Tempering by data fraction**: replica `l` targets prior × likelihood of the counts
//!   `round(t_l · a)`, the posterior given a fraction of the deaths. `t_0 = 0` is the prior
//!   (unimodal, sampled exactly by one sweep), `t_L = 1` the posterior. The fractions are
//!   `t_l = (l / L)^power`: the posterior sd shrinks like 1/√(deaths), so equal steps in
//!   √(deaths) (power 2) keep the swap rates roughly even.
//! - **Swaps**: the Gibbs state is `(p, M)` only (a sweep re-draws every allocation from it
//!   first), so whole states can be exchanged. Replica a holding x and replica b holding y swap
//!   with probability `min(1, L(y; n_a) L(x; n_b) / (L(x; n_a) L(y; n_b)))`, where
//!   `L(x; n) = Π_k Π_j q_kj(x)^{n_kj}`, `q_k = M_kᵀ p` (the priors cancel). Pairs are tried
//!   in the deterministic even/odd order (even pairs after even rounds, odd after odd), which
//!   moves states along the ladder faster than random pair choice (Syed et al. 2022,
//!   "Non-reversible parallel tempering", JRSS B).
//! - **Error**: several independent tempering chains (one RNG stream each, so results do not
//!   depend on the thread count); the Monte Carlo standard error of every mean comes from batch
//!   means over all chains' batches.
//!
//! Validation: `tests::tempering_recovers_the_mode_weights_of_an_exact_bimodal_posterior`
//! samples a two-cause, two-algorithm posterior with two separated modes of unequal mass, whose
//! moments are computed exactly by summing over every allocation of the deaths; plain Gibbs
//! from one starting point misses one mode there.
//!
//! Run `cargo run -p vacal-engine --features reference-tools --example multimodal_reference`
//! to regenerate `tests/fixtures/multimodal/kenya_neonate_ensemble_no_pathcorr.json`.

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

use crate::calibrate::EnsembleModel;
use crate::diagnostics::{ess_bulk, split_rhat_rank};
use crate::error::EngineError;
use crate::gibbs::{ChainState, Prepared};
use crate::mcmc::{run_chains, ChainDraws, McmcSettings, SamplerError, Samples};
use crate::model::{AlgorithmTerm, ModelSpec};
use crate::request::CalibrationRequest;

/// How long and how wide a tempering run is.
#[derive(Debug, Clone, PartialEq)]
pub struct TemperingSettings {
    /// Independent tempering chains (each a full ladder).
    pub chains: usize,
    /// Replicas above the prior: the ladder is `t_l = (l / levels)^power`, `l = 0..=levels`.
    pub levels: usize,
    pub power: f64,
    /// Rounds (a sweep of every replica, then one even or odd swap pass) discarded per chain.
    pub warmup_rounds: usize,
    /// Rounds after warm-up per chain.
    pub rounds: usize,
    /// Keep the posterior replica's state every `thin` rounds.
    pub thin: usize,
    /// Batches per chain for the batch-means standard errors.
    pub batches_per_chain: usize,
    pub seed: u64,
    /// Worker threads; `None` = available parallelism.
    pub threads: Option<usize>,
}

/// The reported ensemble posterior mean of a request, from data-fraction tempering.
#[derive(Debug, Clone, PartialEq)]
pub struct EnsembleReference {
    pub causes: Vec<String>,
    /// Posterior mean of the reported calibrated ensemble CSMF, per cause.
    pub mean: Vec<f64>,
    /// Monte Carlo standard error of `mean`: the larger of the batch-means error and the
    /// between-chain error, so that neither a batch length shorter than the autocorrelation
    /// nor a few lucky chains makes it look smaller than it is.
    pub mcse: Vec<f64>,
    /// Batch-means standard error over every chain's batches.
    pub mcse_batch_means: Vec<f64>,
    /// Sd of the chain means over √chains (the chains are independent).
    pub mcse_between_chains: Vec<f64>,
    /// Each chain's own mean, per cause (they should agree within a few chain-level errors).
    pub chain_means: Vec<Vec<f64>>,
    /// Rank-normalised split R-hat over the chains, per cause.
    pub rhat: Vec<f64>,
    /// Bulk ESS of the kept draws, per cause.
    pub ess_bulk: Vec<f64>,
    /// Posterior probability of each mode of the classifier passed in, and its MCSE.
    pub mode_weights: Vec<f64>,
    pub mode_weights_mcse: Vec<f64>,
    /// Mode changes of the posterior replica between kept draws, summed over chains.
    pub mode_changes: usize,
    /// The data fractions of the ladder, from the prior (0) to the posterior (1).
    pub fractions: Vec<f64>,
    /// Accepted fraction of swaps between ladder levels `l` and `l + 1`.
    pub swap_rates: Vec<f64>,
    /// Kept draws over all chains.
    pub draws: usize,
    /// Gibbs sweeps over all chains and replicas, warm-up included.
    pub sweeps: u64,
}

/// The posterior replica's kept draws of one tempering chain and its swap counts.
pub(crate) struct TemperedChain {
    pub(crate) draws: Vec<Vec<f64>>,
    pub(crate) swaps_tried: Vec<u64>,
    pub(crate) swaps_accepted: Vec<u64>,
}

/// `t_l = (l / levels)^power` for `l = 0..=levels`.
pub(crate) fn ladder(levels: usize, power: f64) -> Vec<f64> {
    (0..=levels)
        .map(|l| (l as f64 / levels as f64).powf(power))
        .collect()
}

/// The posterior given the fraction `t` of the deaths: every count becomes `round(t · a)`.
fn fraction_spec(spec: &ModelSpec, t: f64) -> ModelSpec {
    ModelSpec {
        p_prior: spec.p_prior.clone(),
        terms: spec
            .terms
            .iter()
            .map(|term| AlgorithmTerm {
                counts: term.counts.iter().map(|a| (t * a).round()).collect(),
                ..term.clone()
            })
            .collect(),
    }
}

/// Runs `settings.chains` independent data-fraction tempering chains on `spec`.
pub(crate) fn sample_tempered(
    spec: &ModelSpec,
    settings: &TemperingSettings,
) -> Result<Vec<TemperedChain>, SamplerError> {
    if settings.levels == 0 || settings.thin == 0 {
        return Err(SamplerError::Failed(
            "tempering needs at least one level above the prior and thin ≥ 1".into(),
        ));
    }
    let fractions = ladder(settings.levels, settings.power);
    let models = fractions
        .iter()
        .map(|&t| Prepared::new(&fraction_spec(spec, t)))
        .collect::<Result<Vec<_>, _>>()?;
    let chain_settings = McmcSettings {
        chains: settings.chains,
        warmup_per_chain: settings.warmup_rounds,
        draws_per_chain: settings.rounds / settings.thin,
        thin: settings.thin,
        seed: settings.seed,
        target_accept: 0.0,
        max_depth: 0,
        threads: settings.threads,
    };
    let never = || false;
    run_chains(&chain_settings, &never, |chain, _stop| {
        run_tempered_chain(&models, settings, chain)
    })
}

fn run_tempered_chain(
    models: &[Prepared],
    settings: &TemperingSettings,
    chain: usize,
) -> Result<TemperedChain, SamplerError> {
    // The same stream layout as the Gibbs sampler: one ChaCha8 stream per chain.
    let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
    rng.set_stream(chain as u64);
    let mut states: Vec<ChainState> = models.iter().map(ChainState::new).collect();
    let pairs = models.len() - 1;
    let mut swaps_tried = vec![0; pairs];
    let mut swaps_accepted = vec![0; pairs];
    let mut draws = Vec::with_capacity(settings.rounds / settings.thin);
    let posterior = models.len() - 1;
    for round in 0..settings.warmup_rounds + settings.rounds {
        for (state, model) in states.iter_mut().zip(models) {
            state.sweep(model, &mut rng)?;
        }
        for a in (round % 2..pairs).step_by(2) {
            let b = a + 1;
            let (x, y) = (&states[a], &states[b]);
            let log_ratio = models[a].log_likelihood(y) + models[b].log_likelihood(x)
                - models[a].log_likelihood(x)
                - models[b].log_likelihood(y);
            let u: f64 = rng.random();
            // A NaN ratio (both states impossible somewhere) compares false: no swap.
            let accept = u.ln() < log_ratio;
            if round >= settings.warmup_rounds {
                swaps_tried[a] += 1;
                swaps_accepted[a] += u64::from(accept);
            }
            if accept {
                let (low, high) = states.split_at_mut(b);
                low[a].swap_state(&mut high[0]);
            }
        }
        if round >= settings.warmup_rounds
            && (round - settings.warmup_rounds + 1).is_multiple_of(settings.thin)
        {
            draws.push(states[posterior].p.clone());
        }
    }
    Ok(TemperedChain {
        draws,
        swaps_tried,
        swaps_accepted,
    })
}

/// Mean of every coordinate over all chains' draws, and its batch-means standard error: each
/// chain is cut into `batches` consecutive batches (a tail that does not fill a batch is
/// dropped from the error only), and the error is the sd of the batch means over √(their
/// number).
pub(crate) fn batch_means(chains: &[Vec<Vec<f64>>], batches: usize) -> (Vec<f64>, Vec<f64>) {
    let dim = chains
        .iter()
        .find_map(|c| c.first().map(Vec::len))
        .unwrap_or(0);
    let all: Vec<&Vec<f64>> = chains.iter().flatten().collect();
    let mean: Vec<f64> = (0..dim)
        .map(|i| all.iter().map(|d| d[i]).sum::<f64>() / all.len() as f64)
        .collect();
    let mut batch_means: Vec<Vec<f64>> = Vec::new();
    for chain in chains {
        let size = chain.len() / batches.max(1);
        if size == 0 {
            continue;
        }
        for batch in chain.chunks_exact(size).take(batches) {
            batch_means.push(
                (0..dim)
                    .map(|i| batch.iter().map(|d| d[i]).sum::<f64>() / size as f64)
                    .collect(),
            );
        }
    }
    let m = batch_means.len() as f64;
    let mcse = (0..dim)
        .map(|i| {
            let centre = batch_means.iter().map(|b| b[i]).sum::<f64>() / m;
            let var = batch_means
                .iter()
                .map(|b| (b[i] - centre).powi(2))
                .sum::<f64>()
                / (m - 1.0);
            (var / m).sqrt()
        })
        .collect();
    (mean, mcse)
}

/// The reported calibrated ensemble mean of `request` (what `calibrate` returns as the
/// ensemble row's `mean`), by data-fraction tempering on the Gibbs sampler. `mode_of` sorts a
/// reported draw into one of `modes` modes, for the mode weights.
pub fn ensemble_reference(
    request: &CalibrationRequest,
    settings: &TemperingSettings,
    modes: usize,
    mode_of: &dyn Fn(&[f64]) -> usize,
) -> Result<EnsembleReference, EngineError> {
    let model = EnsembleModel::of(request)?;
    let chains = sample_tempered(&model.spec, settings)?;

    let reported: Vec<Vec<Vec<f64>>> = chains
        .iter()
        .map(|c| c.draws.iter().map(|p| model.reported_draw(p)).collect())
        .collect();
    let (batch_mean, mcse_batch_means) = batch_means(&reported, settings.batches_per_chain);
    let samples = Samples {
        chains: chains
            .iter()
            .map(|c| ChainDraws {
                draws: c.draws.clone(),
                divergences: 0,
                max_depth_hits: 0,
            })
            .collect(),
    };
    let mean = model.reported_mean(&samples);
    debug_assert!(mean
        .iter()
        .zip(&batch_mean)
        .all(|(a, b)| (a - b).abs() < 1e-9));

    let chain_means: Vec<Vec<f64>> = reported
        .iter()
        .map(|c| batch_means(std::slice::from_ref(c), 1).0)
        .collect();
    // Each chain mean as one batch: equal-length chains make this the between-chain error.
    let (_, mcse_between_chains) = batch_means(
        &chain_means
            .iter()
            .map(|m| vec![m.clone()])
            .collect::<Vec<_>>(),
        1,
    );
    let mcse = mcse_batch_means
        .iter()
        .zip(&mcse_between_chains)
        .map(|(a, b)| a.max(*b))
        .collect();
    let coordinate = |i: usize| -> Vec<Vec<f64>> {
        reported
            .iter()
            .map(|c| c.iter().map(|d| d[i]).collect())
            .collect()
    };
    let dim = model.causes.len();
    let calibrated = |i: usize| model.s_idx.contains(&i);
    let rhat = (0..dim)
        .map(|i| {
            if calibrated(i) {
                split_rhat_rank(&coordinate(i))
            } else {
                f64::NAN
            }
        })
        .collect();
    let ess = (0..dim)
        .map(|i| {
            if calibrated(i) {
                ess_bulk(&coordinate(i))
            } else {
                f64::NAN
            }
        })
        .collect();

    let labels: Vec<Vec<usize>> = reported
        .iter()
        .map(|c| c.iter().map(|d| mode_of(d)).collect())
        .collect();
    let indicators: Vec<Vec<Vec<f64>>> = labels
        .iter()
        .map(|c| {
            c.iter()
                .map(|&m| (0..modes).map(|k| f64::from(u8::from(k == m))).collect())
                .collect()
        })
        .collect();
    let (mode_weights, mode_weights_mcse) = batch_means(&indicators, settings.batches_per_chain);
    let mode_changes = labels
        .iter()
        .map(|c| c.windows(2).filter(|w| w[0] != w[1]).count())
        .sum();

    let tried: Vec<u64> = (0..settings.levels)
        .map(|l| chains.iter().map(|c| c.swaps_tried[l]).sum())
        .collect();
    let swap_rates = (0..settings.levels)
        .map(|l| chains.iter().map(|c| c.swaps_accepted[l]).sum::<u64>() as f64 / tried[l] as f64)
        .collect();
    Ok(EnsembleReference {
        causes: model.causes,
        mean,
        mcse,
        mcse_batch_means,
        mcse_between_chains,
        chain_means,
        rhat,
        ess_bulk: ess,
        mode_weights,
        mode_weights_mcse,
        mode_changes,
        fractions: ladder(settings.levels, settings.power),
        swap_rates,
        draws: reported.iter().map(Vec::len).sum(),
        sweeps: ((settings.warmup_rounds + settings.rounds)
            * (settings.levels + 1)
            * settings.chains) as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Misclassification;

    fn ln_gamma(x: f64) -> f64 {
        // Stirling series after shifting x above 10: ~1e-14 relative, ample for weights.
        let mut shift = 0.0;
        let mut x = x;
        while x < 10.0 {
            shift -= x.ln();
            x += 1.0;
        }
        let inv = 1.0 / x;
        let inv2 = inv * inv;
        shift + (x - 0.5) * x.ln() - x
            + 0.5 * (2.0 * std::f64::consts::PI).ln()
            + inv * (1.0 / 12.0 - inv2 * (1.0 / 360.0 - inv2 * (1.0 / 1260.0 - inv2 / 1680.0)))
    }

    fn ln_beta(a: f64, b: f64) -> f64 {
        ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
    }

    fn ln_choose(n: u64, k: u64) -> f64 {
        ln_gamma(n as f64 + 1.0) - ln_gamma(k as f64 + 1.0) - ln_gamma((n - k) as f64 + 1.0)
    }

    fn log_add(a: f64, b: f64) -> f64 {
        if a == f64::NEG_INFINITY {
            return b;
        }
        let m = a.max(b);
        m + ((a - m).exp() + (b - m).exp()).ln()
    }

    /// Two causes, one algorithm with Dirichlet rows `alpha` and counts `(n1, n2)`: the log
    /// marginal weight of each number `t` of deaths whose true cause is cause 0, summed over the
    /// allocations (x of the n1 deaths called cause 0 are truly 0, y of the n2 called cause 1
    /// are truly 1) with the rows integrated out.
    fn allocation_weights(n1: u64, n2: u64, alpha: [[f64; 2]; 2]) -> Vec<f64> {
        let mut w = vec![f64::NEG_INFINITY; (n1 + n2 + 1) as usize];
        for x in 0..=n1 {
            for y in 0..=n2 {
                let (n00, n01, n10, n11) = (x, n2 - y, n1 - x, y);
                let l = ln_choose(n1, x)
                    + ln_choose(n2, y)
                    + ln_beta(alpha[0][0] + n00 as f64, alpha[0][1] + n01 as f64)
                    + ln_beta(alpha[1][0] + n10 as f64, alpha[1][1] + n11 as f64);
                let t = (n00 + n01) as usize;
                w[t] = log_add(w[t], l);
            }
        }
        w
    }

    /// Exact posterior of the toy: p0's mean, E[p0²] and P(p0 > 1/2) (the "cause 0 high"
    /// mode), from the distribution of the true-cause-0 total T, given which p0 is
    /// Beta(γ0 + T, γ1 + N − T).
    fn exact_toy(
        counts: [(u64, u64); 2],
        alpha: [[f64; 2]; 2],
        prior: [f64; 2],
    ) -> (f64, f64, f64) {
        let a = allocation_weights(counts[0].0, counts[0].1, alpha);
        let b = allocation_weights(counts[1].0, counts[1].1, alpha);
        let n = a.len() + b.len() - 2;
        let mut total = vec![f64::NEG_INFINITY; n + 1];
        for (i, wa) in a.iter().enumerate() {
            for (j, wb) in b.iter().enumerate() {
                total[i + j] = log_add(total[i + j], wa + wb);
            }
        }
        let log_w: Vec<f64> = total
            .iter()
            .enumerate()
            .map(|(t, w)| w + ln_beta(prior[0] + t as f64, prior[1] + (n - t) as f64))
            .collect();
        let max = log_w.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = log_w.iter().map(|l| (l - max).exp()).collect();
        let z: f64 = w.iter().sum();
        let a0 = prior[0] + prior[1] + n as f64;
        let (mut m1, mut m2, mut high) = (0.0, 0.0, 0.0);
        for (t, wt) in w.iter().enumerate() {
            let a = prior[0] + t as f64;
            m1 += wt / z * a / a0;
            m2 += wt / z * a * (a + 1.0) / (a0 * (a0 + 1.0));
            // The modes sit near T ≈ 0.05 N and 0.95 N; the mass between is negligible, so
            // T > N/2 stands for p0 > 1/2.
            high += if 2 * t > n { wt / z } else { 0.0 };
        }
        (m1, m2, high)
    }

    const TOY_COUNTS: [(u64, u64); 2] = [(150, 10), (10, 150)];
    const TOY_ALPHA: [[f64; 2]; 2] = [[10.0, 0.3], [0.3, 10.0]];
    const TOY_PRIOR: [f64; 2] = [1.3, 1.0];

    /// Algorithm A says cause 0, algorithm B says cause 1; each can be explained away by a
    /// misclassification row, so the posterior has a "cause 0 high" and a "cause 1 high" mode
    /// with almost no mass between them, and the prior tilts their weights to about 0.7 / 0.3.
    fn toy_spec() -> ModelSpec {
        let alpha: Vec<Vec<f64>> = TOY_ALPHA.iter().map(|r| r.to_vec()).collect();
        ModelSpec {
            p_prior: TOY_PRIOR.to_vec(),
            terms: TOY_COUNTS
                .iter()
                .map(|&(n1, n2)| AlgorithmTerm {
                    counts: vec![n1 as f64, n2 as f64],
                    calibrated: vec![true, true],
                    misclassification: Misclassification::Dirichlet(alpha.clone()),
                })
                .collect(),
        }
    }

    fn toy_settings(levels: usize) -> TemperingSettings {
        TemperingSettings {
            chains: 4,
            levels,
            power: 2.0,
            warmup_rounds: 2_000,
            rounds: 100_000,
            thin: 5,
            batches_per_chain: 25,
            seed: 42,
            threads: None,
        }
    }

    /// Mean, E[p0²] and the weight of the "cause 0 high" mode from tempered draws, each with
    /// its batch-means standard error.
    fn toy_estimates(chains: &[TemperedChain]) -> (Vec<f64>, Vec<f64>) {
        let stats: Vec<Vec<Vec<f64>>> = chains
            .iter()
            .map(|c| {
                c.draws
                    .iter()
                    .map(|p| vec![p[0], p[0] * p[0], f64::from(u8::from(p[0] > 0.5))])
                    .collect()
            })
            .collect();
        batch_means(&stats, 25)
    }

    #[test]
    fn toy_posterior_is_bimodal_with_unequal_weights() {
        let (_, _, high) = exact_toy(TOY_COUNTS, TOY_ALPHA, TOY_PRIOR);
        assert!((0.6..0.8).contains(&high), "{high}");
    }

    #[test]
    fn tempering_recovers_the_mode_weights_of_an_exact_bimodal_posterior() {
        let (m1, m2, high) = exact_toy(TOY_COUNTS, TOY_ALPHA, TOY_PRIOR);
        let chains = sample_tempered(&toy_spec(), &toy_settings(12)).unwrap();
        let (est, se) = toy_estimates(&chains);
        for ((name, exact), (got, se)) in ["E[p0]", "E[p0²]", "P(p0 > 1/2)"]
            .iter()
            .zip([m1, m2, high])
            .zip(est.iter().zip(&se))
        {
            assert!(
                (got - exact).abs() < 4.5 * se,
                "{name}: tempered {got}, exact {exact} (se {se})"
            );
            // The check has power: the error bars are far below the gap between the modes.
            assert!(*se < 0.02, "{name}: se {se}");
        }
        for c in &chains {
            let rates: Vec<f64> = c
                .swaps_accepted
                .iter()
                .zip(&c.swaps_tried)
                .map(|(a, t)| *a as f64 / *t as f64)
                .collect();
            assert!(rates.iter().all(|r| *r > 0.1), "{rates:?}");
        }
    }

    #[test]
    fn plain_gibbs_stays_in_one_mode_of_the_toy() {
        // What the tempering is for: the posterior replica on its own (a one-level ladder
        // whose swaps with the prior almost never succeed) keeps to the mode it starts in.
        let (_, _, high) = exact_toy(TOY_COUNTS, TOY_ALPHA, TOY_PRIOR);
        let mut settings = toy_settings(1);
        settings.rounds = 20_000;
        let chains = sample_tempered(&toy_spec(), &settings).unwrap();
        let weights: Vec<f64> = chains
            .iter()
            .map(|c| c.draws.iter().filter(|p| p[0] > 0.5).count() as f64 / c.draws.len() as f64)
            .collect();
        assert!(
            weights.iter().all(|w| (w - high).abs() > 0.2),
            "{weights:?} vs exact {high}"
        );
    }

    #[test]
    fn runs_are_deterministic_for_a_seed_whatever_the_threads() {
        let mut settings = toy_settings(4);
        settings.rounds = 500;
        settings.warmup_rounds = 10;
        let run = |threads| {
            let mut s = settings.clone();
            s.threads = Some(threads);
            let chains = sample_tempered(&toy_spec(), &s).unwrap();
            chains.into_iter().map(|c| c.draws).collect::<Vec<_>>()
        };
        let one = run(1);
        assert_eq!(one, run(3));
        assert_ne!(one[0], one[1], "chains use different streams");
    }

    #[test]
    fn the_ladder_runs_from_the_prior_to_the_posterior() {
        let t = ladder(4, 2.0);
        assert_eq!(t, vec![0.0, 0.0625, 0.25, 0.5625, 1.0]);
        let spec = fraction_spec(&toy_spec(), 0.25);
        assert_eq!(spec.terms[0].counts, vec![38.0, 3.0]);
        assert_eq!(fraction_spec(&toy_spec(), 1.0), toy_spec());
    }

    #[test]
    fn batch_means_of_independent_draws_match_the_iid_standard_error() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let chains: Vec<Vec<Vec<f64>>> = (0..4)
            .map(|_| (0..10_000).map(|_| vec![rng.random::<f64>()]).collect())
            .collect();
        let (mean, mcse) = batch_means(&chains, 25);
        // Uniform(0, 1): sd √(1/12) over √40 000 draws.
        let iid = (1.0f64 / 12.0 / 40_000.0).sqrt();
        assert!((mean[0] - 0.5).abs() < 4.5 * iid);
        assert!((mcse[0] / iid - 1.0).abs() < 0.35, "{} vs {iid}", mcse[0]);
    }

    #[test]
    fn reported_draws_match_what_calibrate_summarises() {
        use crate::data::AgeGroup;
        use crate::request::{McmcRequest, VaInput};
        let example = |a: &str| (a.to_string(), VaInput::Example);
        let request = CalibrationRequest {
            va_data: vec![example("eava"), example("insilicova"), example("interva")],
            age_group: Some(AgeGroup::Neonate),
            country: Some("Kenya".into()),
            path_correction: false,
            rules: crate::request::Rules::V2_2,
            mcmc: McmcRequest::default(),
            ..CalibrationRequest::default()
        };
        let model = EnsembleModel::of(&request).unwrap();
        assert_eq!(model.spec.terms.len(), 3);
        let draws = vec![
            vec![0.1, 0.2, 0.3, 0.2, 0.1, 0.1],
            vec![0.05, 0.5, 0.1, 0.1, 0.05, 0.2],
        ];
        let samples = Samples {
            chains: vec![ChainDraws {
                draws: draws.clone(),
                divergences: 0,
                max_depth_hits: 0,
            }],
        };
        let mean = model.reported_mean(&samples);
        let (by_draw, _) =
            batch_means(&[draws.iter().map(|p| model.reported_draw(p)).collect()], 1);
        for (a, b) in mean.iter().zip(&by_draw) {
            assert!((a - b).abs() < 1e-12);
        }
        assert!((mean.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }
}
