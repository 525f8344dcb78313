//! Parallel tempering (replica exchange) with NUTS moves, for posteriors with several modes.
//!
//! NUTS chains cannot cross the low-density valley between well separated modes: each chain
//! settles in the mode it found first, and the chains disagree (R-hat far above 1). Every chain
//! here is an ensemble of replicas of the model at inverse temperatures
//! `1 = β_1 > β_2 > … > β_R`: replica `r` targets prior × likelihood^β_r, which flattens the
//! valleys as β falls, so the hot replicas move between the modes and hand their states down
//! the ladder through swaps. Only the β = 1 replica's draws are reported; the joint chain
//! leaves the product of the tempered posteriors invariant, so they are draws of the posterior.
//!
//! Each replica is a [`NutsChain`] with its own warm-up (step size and metric adapted to its
//! tempered posterior). After every iteration, swaps are proposed between adjacent replicas in
//! [`SWAP_ROUNDS`] rounds, alternately the even pairs `(0,1), (2,3), …` and the odd ones (the
//! "deterministic even-odd" scheme of Syed et al. 2022, "Non-reversible parallel tempering: a
//! scalable highly parallel MCMC scheme"): a state that moves up keeps moving up while its
//! swaps succeed, instead of diffusing, which shortens the round trips between the top and
//! the bottom of the ladder.
//!
//! Determinism: replica `r` of chain `c` draws from the ChaCha8 stream `(r << 32) | c` of the
//! seed, and the swaps of chain `c` from their own stream; one chain's replicas run on one
//! thread, so the draws do not depend on the number of threads.

use std::sync::atomic::{AtomicBool, Ordering};

use rand::RngExt;

use crate::density::Posterior;
use crate::diagnostics::SamplesDiagnostics;
use crate::mcmc::{
    run_chains, CancelCheck, ChainDraws, McmcSettings, Sampler, SamplerError, Samples,
};
use crate::model::ModelSpec;
use crate::nuts::{
    chain_rng, failed, restore_labels, stick_order, validate, NutsChain, Point, CANCEL_POLL,
};

/// Replicas per chain, β_1 = 1 included, and the hottest replica's inverse temperature; the
/// others are spaced geometrically between it and 1.
///
/// Measured on the neonatal Kenya ensemble without path correction (4 chains of 1,250 warm-up
/// and 1,250 retained iterations, seeds 1–6), which is what the fallback exists for:
/// - The modes must merge at the hot end: 10 rungs down to β = 0.1 gave min bulk ESS
///   150–450, down to 0.2 170–1,160, and 12 rungs down to 0.3 240–1,340 (the hottest
///   replica there still holds its mode for long). Capping the hot replicas' trees at depth 4
///   to afford more of them halved the ESS on two seeds: the long trajectories of the hot
///   replicas are what carries states across the valley.
/// - 12 rungs down to 0.2: swap acceptance 0.65–0.76 between adjacent rungs (highest at the
///   top), 230–270 round trips per chain, max R-hat 1.004–1.011 and min bulk ESS 660–1,330
///   over the six seeds. 10 rungs (acceptance 0.57–0.70, 175 round trips): R-hat up to 1.013,
///   ESS 410–1,160; 16 rungs down to 0.1 or 18 down to 0.05 were no better than 12.
/// - 6 rungs down to 0.02 (acceptance 0.02–0.2) left R-hat at 1.01–1.06.
///
/// The bulk ESS overstates how well the modes' weights are known: pneumonia's mean spreads
/// by 0.026 over the six seeds, as from about 100 independent draws.
///
/// Cost: 12 NUTS replicas per chain, the swaps are cheap (two gradients each); the fallback
/// took 6–11 times the first fit's wall time (BENCHMARKS.md).
pub const RUNGS: usize = 12;
pub const MIN_BETA: f64 = 0.2;
/// Rounds of swap proposals (alternately the even and the odd pairs) after each iteration. A
/// state can climb several rungs per iteration: 4 rounds doubled the round trips of 1 (700
/// against 340 over four chains) and raised the min bulk ESS from 170–550 to 410–1,160 at
/// 10 rungs; 8 rounds added no more (the states have to move between swaps too).
pub const SWAP_ROUNDS: usize = 4;

/// Stream of the swap RNG of chain `c` is `SWAP_STREAM | c`; replica streams have `r < 2^32`
/// in their upper half, so they never reach it.
const SWAP_STREAM: u64 = u64::MAX << 32;

/// `rungs` inverse temperatures from 1 down to `min_beta`, evenly spaced in log β. Adjacent
/// replicas swap at a roughly constant rate when the log likelihood's variance scales as
/// 1/β², as it does while the likelihood dominates the prior.
pub fn geometric_ladder(rungs: usize, min_beta: f64) -> Vec<f64> {
    if rungs <= 1 {
        return vec![1.0];
    }
    (0..rungs)
        .map(|r| min_beta.powf(r as f64 / (rungs - 1) as f64))
        .collect()
}

/// The posterior of `spec` tempered at `beta`: prior × likelihood^β. Every term's likelihood
/// is a multinomial in its counts, so raising it to β multiplies the counts by β (the density
/// accepts fractional counts; the multinomial coefficient is a constant and drops out).
pub fn tempered(spec: &ModelSpec, beta: f64) -> ModelSpec {
    let mut out = spec.clone();
    for term in &mut out.terms {
        for c in &mut term.counts {
            *c *= beta;
        }
    }
    out
}

/// Parallel tempering as a [`Sampler`].
#[derive(Debug, Clone, PartialEq)]
pub struct TemperingSampler {
    /// Inverse temperatures, strictly decreasing from 1.
    pub ladder: Vec<f64>,
}

impl Default for TemperingSampler {
    fn default() -> Self {
        TemperingSampler {
            ladder: geometric_ladder(RUNGS, MIN_BETA),
        }
    }
}

impl Sampler for TemperingSampler {
    fn name(&self) -> &'static str {
        "tempering"
    }

    fn sample(
        &self,
        spec: &ModelSpec,
        settings: &McmcSettings,
        cancel: CancelCheck,
    ) -> Result<Samples, SamplerError> {
        run(spec, &self.ladder, settings, cancel).map(|(samples, _)| samples)
    }
}

/// How the replicas of one chain exchanged states after warm-up, for tuning the ladder.
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) struct SwapStats {
    /// Per adjacent pair `(r, r + 1)`: swaps proposed and accepted.
    pub proposed: Vec<u64>,
    pub accepted: Vec<u64>,
    /// Round trips: a state that had reached the hottest replica came back to β = 1.
    pub round_trips: u64,
    /// Leapfrog steps of all replicas, warm-up included (the cost of the run).
    pub leapfrog_steps: u64,
}

impl SwapStats {
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn acceptance(&self) -> Vec<f64> {
        self.proposed
            .iter()
            .zip(&self.accepted)
            .map(|(&n, &a)| a as f64 / n.max(1) as f64)
            .collect()
    }
}

pub(crate) fn run(
    spec: &ModelSpec,
    ladder: &[f64],
    settings: &McmcSettings,
    cancel: CancelCheck,
) -> Result<(Samples, Vec<SwapStats>), SamplerError> {
    let total_iterations = validate(settings)?;
    let valid_ladder = ladder.first() == Some(&1.0)
        && ladder.windows(2).all(|w| w[1] < w[0])
        && ladder.iter().all(|&b| b > 0.0)
        && ladder.len() < (1 << 31);
    if !valid_ladder {
        return Err(failed(format!(
            "the ladder must decrease strictly from 1 and stay positive, got {ladder:?}"
        )));
    }
    Posterior::new(spec).map_err(failed)?;
    // One order for every replica, from the untempered deaths, so that a swapped position
    // means the same CSMF in both replicas.
    let order = stick_order(spec);
    let spec = spec.relabelled(&order);
    let specs: Vec<ModelSpec> = ladder.iter().map(|&b| tempered(&spec, b)).collect();
    let chains = run_chains(settings, cancel, |c, stop| {
        // Each chain builds its own densities: they carry scratch buffers.
        let posteriors = specs
            .iter()
            .map(Posterior::new)
            .collect::<Result<Vec<_>, _>>()
            .map_err(failed)?;
        run_chain(&posteriors, settings, total_iterations, c, stop, cancel)?
            .ok_or(SamplerError::Cancelled)
    })?;
    let (mut draws, stats): (Vec<ChainDraws>, Vec<SwapStats>) = chains.into_iter().unzip();

    restore_labels(&mut draws, &order);
    Ok((Samples { chains: draws }, stats))
}

/// Where a state last touched the ends of the ladder, for counting round trips.
#[derive(Debug, Clone, Copy, PartialEq)]
enum LastEnd {
    Neither,
    Top,
    Bottom,
}

/// One chain: `posteriors[r]` is replica `r`'s tempered posterior. `Ok(None)`: stopped
/// because another chain failed or was cancelled.
fn run_chain(
    posteriors: &[Posterior],
    settings: &McmcSettings,
    total_iterations: usize,
    c: usize,
    stop: &AtomicBool,
    cancel: CancelCheck,
) -> Result<Option<(ChainDraws, SwapStats)>, SamplerError> {
    let rungs = posteriors.len();
    let mut replicas = posteriors
        .iter()
        .enumerate()
        .map(|(r, posterior)| {
            let rng = chain_rng(settings.seed, ((r as u64) << 32) | c as u64);
            NutsChain::start(posterior, settings, rng, c)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut swap_rng = chain_rng(settings.seed, SWAP_STREAM | c as u64);
    let dim = posteriors[0].dim();
    let (mut into_a, mut into_b) = (Point::new(dim), Point::new(dim));
    // `walker[r]`: which state replica `r` holds (states follow their swaps), and where each
    // state last touched an end of the ladder.
    let mut walker: Vec<usize> = (0..rungs).collect();
    let mut last_end = vec![LastEnd::Neither; rungs];
    let max_depth = settings.max_depth as usize;
    let warmup = settings.warmup_per_chain;
    let mut out = ChainDraws {
        draws: Vec::with_capacity(settings.draws_per_chain),
        divergences: 0,
        max_depth_hits: 0,
    };
    let mut stats = SwapStats {
        proposed: vec![0; rungs - 1],
        accepted: vec![0; rungs - 1],
        ..SwapStats::default()
    };
    for it in 0..total_iterations {
        if it.is_multiple_of(CANCEL_POLL) {
            if stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            if cancel() {
                return Err(SamplerError::Cancelled);
            }
        }
        let sampling = it >= warmup;
        for (r, replica) in replicas.iter_mut().enumerate() {
            let transition = replica.step();
            stats.leapfrog_steps += transition.leapfrog_steps;
            if r == 0 && sampling {
                out.divergences += usize::from(transition.divergent);
                out.max_depth_hits += usize::from(transition.depth >= max_depth);
            }
        }
        for round in 0..SWAP_ROUNDS {
            // Even pairs, then odd ones, alternating.
            for a in ((it * SWAP_ROUNDS + round) % 2..rungs - 1).step_by(2) {
                let b = a + 1;
                // The positions exchanged, with their log density and gradient under the
                // receiving replica's posterior.
                into_a.q.copy_from_slice(&replicas[b].state.q);
                into_a.logp = posteriors[a].logp_and_grad(&into_a.q, &mut into_a.g);
                into_b.q.copy_from_slice(&replicas[a].state.q);
                into_b.logp = posteriors[b].logp_and_grad(&into_b.q, &mut into_b.g);
                let log_alpha =
                    into_a.logp + into_b.logp - replicas[a].state.logp - replicas[b].state.logp;
                let u: f64 = swap_rng.random();
                // A NaN (a non-finite density) rejects.
                let accept = u.ln() < log_alpha;
                if sampling {
                    stats.proposed[a] += 1;
                    stats.accepted[a] += u64::from(accept);
                }
                if accept {
                    std::mem::swap(&mut replicas[a].state, &mut into_a);
                    std::mem::swap(&mut replicas[b].state, &mut into_b);
                    walker.swap(a, b);
                }
            }
            if sampling && rungs > 1 {
                if last_end[walker[0]] == LastEnd::Bottom {
                    stats.round_trips += 1;
                }
                last_end[walker[0]] = LastEnd::Top;
                last_end[walker[rungs - 1]] = LastEnd::Bottom;
            }
        }
        if sampling && (it - warmup).is_multiple_of(settings.thin) {
            out.draws.push(replicas[0].p());
        }
    }
    Ok(Some((out, stats)))
}

/// A coordinate whose chains disagree more than this (rank-normalised split R-hat) may sit in
/// different modes. Above the 1.01 of the warning: short fits of unimodal posteriors reach
/// 1.01–1.03 by chance, while chains stuck in different modes give 1.3 and more.
pub const MODES_RHAT_ABOVE: f64 = 1.05;
/// ... and its pooled draws must fall into two groups this far apart ([`separation`]). The
/// best two-group split of a unimodal sample gives 1.7–3.5 (Cauchy 1.7, log-normal 2.2,
/// normal 2.66, Beta(0.05, 5) 2.75, uniform 3.47, for 5,000 draws); on the neonatal Kenya
/// ensemble without path correction, pneumonia and sepsis give 9.2–11.7 over seeds 1–6, and
/// prematurity, whose R-hat is 1.05–1.1 there only through them, 2.7.
pub const MODES_SEPARATION_ABOVE: f64 = 4.0;

/// The coordinates of `p` on which the chains of `samples` found different modes: their
/// chains disagree (R-hat above [`MODES_RHAT_ABOVE`]) and their pooled draws form two
/// well-separated groups ([`separation`] above [`MODES_SEPARATION_ABOVE`]). Chains that
/// disagree on a unimodal marginal are slow or short, which more draws fix and tempering
/// does not.
///
/// Not a test that each chain is stationary on its own: on the Kenya ensemble the NUTS
/// chains do cross between the modes, a few times in 1,250 draws, so the split R-hat of a
/// chain's own quarters reaches 1.1–1.5 on four seeds of six; what marks the modes is that
/// the draws keep to two places and the chains spend different shares of time in each.
pub fn multimodal_coordinates(samples: &Samples, diagnostics: &SamplesDiagnostics) -> Vec<usize> {
    if samples.chains.len() < 2 {
        return Vec::new();
    }
    diagnostics
        .per_coordinate
        .iter()
        .enumerate()
        .filter(|(_, c)| c.rhat > MODES_RHAT_ABOVE)
        .map(|(i, _)| i)
        .filter(|&i| {
            let pooled: Vec<f64> = samples
                .chains
                .iter()
                .flat_map(|c| c.draws.iter().map(move |d| d[i]))
                .collect();
            separation(&pooled) > MODES_SEPARATION_ABOVE
        })
        .collect()
}

/// Ashman's D of the best split of `values` into two groups (the one that minimises the sum
/// of squared deviations from the group means, as 1-D k-means with k = 2):
/// `√2 |μ₁ − μ₂| / √(σ₁² + σ₂²)`. NaN for fewer than 4 values.
pub fn separation(values: &[f64]) -> f64 {
    let n = values.len();
    if n < 4 {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    // Prefix sums of x and x² give each group's squared deviations in O(1).
    let mut sum = vec![0.0; n + 1];
    let mut sum_sq = vec![0.0; n + 1];
    for (k, &x) in sorted.iter().enumerate() {
        sum[k + 1] = sum[k] + x;
        sum_sq[k + 1] = sum_sq[k] + x * x;
    }
    let group = |from: usize, to: usize| {
        let m = (to - from) as f64;
        let mean = (sum[to] - sum[from]) / m;
        let ss = ((sum_sq[to] - sum_sq[from]) - m * mean * mean).max(0.0);
        (mean, ss)
    };
    let mut best: Option<(f64, usize)> = None;
    // Each group keeps at least two values, so both variances exist.
    for k in 2..=n - 2 {
        let within = group(0, k).1 + group(k, n).1;
        if best.is_none_or(|(b, _)| within < b) {
            best = Some((within, k));
        }
    }
    let Some((_, k)) = best else {
        return f64::NAN;
    };
    let ((m1, ss1), (m2, ss2)) = (group(0, k), group(k, n));
    let var1 = ss1 / (k - 1) as f64;
    let var2 = ss2 / (n - k - 1) as f64;
    std::f64::consts::SQRT_2 * (m2 - m1).abs() / (var1 + var2).sqrt()
}

#[cfg(test)]
mod tests;
