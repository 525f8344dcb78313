//! NUTS on the posterior of [`ModelSpec`]: Stan's algorithm (multinomial sampling along the
//! trajectory, the generalised no-U-turn criterion with the extra checks across sub-trees, dual
//! averaging of the step size towards `target_accept`, Stan's windowed estimation of a diagonal
//! metric), written for this density. A transition allocates nothing: the tree works in
//! buffers owned by the chain.
//!
//! It replaced nuts-rs 0.19 because Stan's warm-up and trajectory rules give more effective
//! draws here: on the neonatal EAVA example the minimum bulk ESS of 5,000 draws rose from
//! 2,078 to 2,967 for about the same CPU time (BENCHMARKS.md); nuts-rs's own bookkeeping per
//! leapfrog step is somewhat cheaper.
//!
//! One departure from Stan: warm-up trajectories stop at depth [`WARMUP_MAX_DEPTH`]. Warm-up
//! draws only tune the step size and metric, and on this posterior the half-length trajectories
//! tune them as well, for a fifth fewer instructions per fit (BENCHMARKS.md). After warm-up
//! the trajectories follow `settings.max_depth` as in Stan.
//!
//! Chain `c` draws its initial position and all its random numbers from a ChaCha8 RNG seeded
//! with `settings.seed` on stream `c`, so the draws do not depend on the number of threads.

mod adaptation;
mod kernels;
mod trajectory;

use std::sync::atomic::{AtomicBool, Ordering};

use rand::rngs::ChaCha8Rng;
use rand::SeedableRng;

use self::adaptation::Adaptation;
use self::trajectory::Nuts;
pub(crate) use self::trajectory::{Point, Transition};
use crate::density::Posterior;
use crate::mcmc::{
    run_chains, CancelCheck, ChainDraws, McmcSettings, Sampler, SamplerError, Samples,
};
use crate::model::ModelSpec;

/// Iterations between two calls of the cancel check.
pub(crate) const CANCEL_POLL: usize = 50;
/// Random initial positions tried before giving up (Stan also tries 100).
const INIT_TRIES: usize = 100;
/// An energy error above this ends the trajectory as divergent (Stan's `max_deltaH`).
const MAX_DELTA_H: f64 = 1000.0;
/// Deepest tree during warm-up (at most 15 leapfrog steps). The fits' sampling-phase trees
/// are depth 5; capping warm-up at 4 left the minimum bulk ESS unchanged over 12–24 seeds of
/// the neonatal and child ensembles and of a single fit without path correction, and at 3 it
/// fell by a fifth.
pub const WARMUP_MAX_DEPTH: u64 = 4;

/// Samples `p` from the posterior of `spec` with NUTS.
///
/// Every chain runs `warmup_per_chain` adaptation iterations and then
/// `draws_per_chain × thin` iterations, of which every `thin`-th (starting with the first) is
/// kept. Divergences and maximum-tree-depth hits are counted after warm-up.
pub fn sample_nuts(
    spec: &ModelSpec,
    settings: &McmcSettings,
    cancel: CancelCheck,
) -> Result<Samples, SamplerError> {
    run(spec, settings, cancel).map(|(samples, _)| samples)
}

/// NUTS as a [`Sampler`].
#[derive(Debug, Clone, Copy)]
pub struct NutsSampler;

impl Sampler for NutsSampler {
    fn name(&self) -> &'static str {
        "nuts"
    }

    fn sample(
        &self,
        spec: &ModelSpec,
        settings: &McmcSettings,
        cancel: CancelCheck,
    ) -> Result<Samples, SamplerError> {
        sample_nuts(spec, settings, cancel)
    }
}

/// Sampler behaviour of one chain (after warm-up unless named so), for tuning and benchmarks.
#[derive(Debug, Clone, Default)]
#[cfg_attr(not(test), allow(dead_code))]
struct ChainStats {
    iterations: u64,
    leapfrog_steps: u64,
    warmup_leapfrog_steps: u64,
    step_size: f64,
    /// Deepest tree of the warm-up and of the sampling phase.
    warmup_max_depth: usize,
    max_depth: usize,
}

struct Plan<'a> {
    settings: &'a McmcSettings,
    total_iterations: usize,
    cancel: CancelCheck<'a>,
}

pub(crate) fn failed(msg: impl std::fmt::Display) -> SamplerError {
    SamplerError::Failed(msg.to_string())
}

pub(crate) fn validate(settings: &McmcSettings) -> Result<usize, SamplerError> {
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
    if settings.max_depth == 0 || settings.max_depth > 30 {
        return Err(failed(format!(
            "max_depth must be in 1..=30, got {}",
            settings.max_depth
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
    // Checked once here; every chain then builds its own copy (the density carries scratch
    // buffers, so it cannot be shared across threads).
    Posterior::new(spec).map_err(failed)?;
    let order = stick_order(spec);
    let spec = &spec.relabelled(&order);
    let plan = Plan {
        settings,
        total_iterations,
        cancel,
    };
    let chains = run_chains(settings, cancel, |c, stop| {
        let posterior = Posterior::new(spec).map_err(failed)?;
        run_chain(&plan, &posterior, c, stop)?.ok_or(SamplerError::Cancelled)
    })?;
    let (mut draws, stats): (Vec<ChainDraws>, _) = chains.into_iter().unzip();
    restore_labels(&mut draws, &order);
    Ok((Samples { chains: draws }, stats))
}

/// Puts draws made on a spec relabelled with `order` ([`ModelSpec::relabelled`]) back in the
/// original cause order.
pub(crate) fn restore_labels(chains: &mut [ChainDraws], order: &[usize]) {
    let mut restored = vec![0.0; order.len()];
    for draw in chains.iter_mut().flat_map(|c| c.draws.iter_mut()) {
        for (k, &cause) in order.iter().enumerate() {
            restored[cause] = draw[k];
        }
        draw.copy_from_slice(&restored);
    }
}

/// The order in which the causes enter Stan's stick-breaking coordinates: ascending in their
/// deaths over all terms, so the largest causes come last (ties keep their order). The
/// transform is not symmetric: each stick is a share of what the earlier ones left, so a large
/// cause early makes every later coordinate move with it. Over 18 fits and 8 seeds each this
/// order gave 1.17 times the min bulk ESS (geometric mean), and 1.24–1.58 times on the child
/// ensembles (BENCHMARKS.md, "Causes in ascending order for NUTS").
pub(crate) fn stick_order(spec: &ModelSpec) -> Vec<usize> {
    let deaths = |j: usize| -> f64 { spec.terms.iter().map(|t| t.counts[j]).sum() };
    let mut order: Vec<usize> = (0..spec.dim()).collect();
    order.sort_by(|&a, &b| deaths(a).total_cmp(&deaths(b)));
    order
}

/// The NUTS state of one chain, advanced one iteration at a time: the position, the
/// trajectory buffers, the warm-up adaptation and the chain's RNG. [`run_chain`] drives one per
/// chain; parallel tempering drives one per replica and exchanges positions between them.
pub(crate) struct NutsChain<'a> {
    posterior: &'a Posterior,
    /// The current position (with its log density and gradient under `posterior`).
    pub(crate) state: Point,
    nuts: Nuts<'a>,
    adapt: Adaptation,
    rng: ChaCha8Rng,
    warmup: usize,
    max_depth: usize,
    /// Iterations done so far.
    iteration: usize,
}

impl<'a> NutsChain<'a> {
    /// Draws a random initial position with a finite density from `rng` and, if there is a
    /// warm-up, a first step size. `c` only names the chain in errors.
    pub(crate) fn start(
        posterior: &'a Posterior,
        settings: &McmcSettings,
        mut rng: ChaCha8Rng,
        c: usize,
    ) -> Result<Self, SamplerError> {
        let dim = posterior.dim();
        let mut state = Point::new(dim);
        let mut found = false;
        for _ in 0..INIT_TRIES {
            posterior.random_position(&mut rng, &mut state.q);
            state.logp = posterior.logp_and_grad(&state.q, &mut state.g);
            if state.logp.is_finite() && state.g.iter().all(|g| g.is_finite()) {
                found = true;
                break;
            }
        }
        if !found {
            return Err(failed(format!(
                "chain {c}: no finite log posterior at {INIT_TRIES} random initial positions"
            )));
        }

        let warmup = settings.warmup_per_chain;
        let max_depth = settings.max_depth as usize;
        let mut nuts = Nuts::new(posterior, dim, max_depth);
        nuts.max_depth = max_depth.min(WARMUP_MAX_DEPTH as usize);
        let mut adapt = Adaptation::new(warmup, dim, settings.target_accept);
        if warmup > 0 {
            nuts.step_size = nuts.find_reasonable_step_size(&state, 1.0, &mut rng);
            adapt.step_size.restart(nuts.step_size);
        }
        Ok(NutsChain {
            posterior,
            state,
            nuts,
            adapt,
            rng,
            warmup,
            max_depth,
            iteration: 0,
        })
    }

    /// One iteration: a transition from `state`, followed during warm-up by the adaptation.
    pub(crate) fn step(&mut self) -> Transition {
        let it = self.iteration;
        self.iteration += 1;
        if it == self.warmup {
            self.nuts.max_depth = self.max_depth;
        }
        let transition = self.nuts.transition(&mut self.state, &mut self.rng);
        if it < self.warmup {
            let nuts = &mut self.nuts;
            nuts.step_size = self.adapt.step_size.learn(transition.accept_stat);
            if self.adapt.metric.learn(&self.state.q, &mut nuts.inv_metric) {
                // A new metric: restart the step-size search from a sensible value (as Stan).
                nuts.step_size =
                    nuts.find_reasonable_step_size(&self.state, nuts.step_size, &mut self.rng);
                self.adapt.step_size.restart(nuts.step_size);
            }
            if it + 1 == self.warmup {
                nuts.step_size = self.adapt.step_size.final_step_size();
            }
        }
        transition
    }

    pub(crate) fn step_size(&self) -> f64 {
        self.nuts.step_size
    }

    /// The CSMF `p` at the current position.
    pub(crate) fn p(&self) -> Vec<f64> {
        let mut p = vec![0.0; self.posterior.num_causes()];
        self.posterior.p_from_position(&self.state.q, &mut p);
        p
    }
}

/// `Ok(None)`: stopped because another chain failed or was cancelled (`stop` is set).
fn run_chain(
    plan: &Plan,
    posterior: &Posterior,
    c: usize,
    stop: &AtomicBool,
) -> Result<Option<(ChainDraws, ChainStats)>, SamplerError> {
    let settings = plan.settings;
    let mut chain = NutsChain::start(posterior, settings, chain_rng(settings.seed, c as u64), c)?;
    let warmup = settings.warmup_per_chain;
    let max_depth = chain.max_depth;
    let mut out = ChainDraws {
        draws: Vec::with_capacity(settings.draws_per_chain),
        divergences: 0,
        max_depth_hits: 0,
    };
    let mut stats = ChainStats::default();
    for it in 0..plan.total_iterations {
        if it.is_multiple_of(CANCEL_POLL) {
            if stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            if (plan.cancel)() {
                return Err(SamplerError::Cancelled);
            }
        }
        let transition = chain.step();
        if it < warmup {
            stats.warmup_leapfrog_steps += transition.leapfrog_steps;
            stats.warmup_max_depth = stats.warmup_max_depth.max(transition.depth);
            continue;
        }
        out.divergences += usize::from(transition.divergent);
        out.max_depth_hits += usize::from(transition.depth >= max_depth);
        stats.iterations += 1;
        stats.leapfrog_steps += transition.leapfrog_steps;
        stats.max_depth = stats.max_depth.max(transition.depth);
        stats.step_size = chain.step_size();
        if (it - warmup).is_multiple_of(settings.thin) {
            out.draws.push(chain.p());
        }
    }
    Ok(Some((out, stats)))
}

/// The RNG of chain `stream` of a run seeded with `seed`: ChaCha8 on its own stream, so that
/// chains are independent and do not depend on the threads that run them.
pub(crate) fn chain_rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

#[cfg(test)]
mod tests;
