//! What every sampler takes and returns, and the thread pool that runs their chains.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::error::panic_message;
use crate::model::ModelSpec;

/// Settings of one sampler run. Chains run in parallel threads; chain `c` draws all its random
/// numbers from an RNG seeded by `(seed, c)`, so results do not depend on `threads`.
#[derive(Debug, Clone, PartialEq)]
pub struct McmcSettings {
    pub chains: usize,
    /// Warm-up (NUTS: adaptation; Gibbs: burn-in sweeps) iterations per chain.
    pub warmup_per_chain: usize,
    /// Retained draws per chain (after thinning).
    pub draws_per_chain: usize,
    /// Keep every `thin`-th iteration after warm-up.
    pub thin: usize,
    pub seed: u64,
    /// NUTS target acceptance rate (R: adapt_delta 0.9).
    pub target_accept: f64,
    /// NUTS maximum tree depth (Stan: 10).
    pub max_depth: u64,
    /// Worker threads; `None` = available parallelism, at most `chains`.
    pub threads: Option<usize>,
}

/// Draws of `p` from one chain.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainDraws {
    /// `draws[t]` is the p vector (length d, sums to 1) of retained draw `t`.
    pub draws: Vec<Vec<f64>>,
    /// Divergent transitions after warm-up (always 0 for Gibbs).
    pub divergences: usize,
    /// Post-warm-up iterations that hit the maximum tree depth (always 0 for Gibbs).
    pub max_depth_hits: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Samples {
    pub chains: Vec<ChainDraws>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplerError {
    #[error("cancelled")]
    Cancelled,
    #[error("sampler failed: {0}")]
    Failed(String),
}

/// Polled by samplers between iterations (from any thread); `true` stops the run with
/// `SamplerError::Cancelled`.
pub type CancelCheck<'a> = &'a (dyn Fn() -> bool + Sync);

/// A production sampler: the model and settings in, draws of `p` out, `cancel` polled between
/// iterations. The caller computes diagnostics from the draws, the same way for every sampler.
pub trait Sampler {
    /// The name a fit's diagnostics report.
    fn name(&self) -> &'static str;
    fn sample(
        &self,
        spec: &ModelSpec,
        settings: &McmcSettings,
        cancel: CancelCheck,
    ) -> Result<Samples, SamplerError>;
}

/// Runs `chain(c, stop)` for every chain `c` on up to `settings.threads` threads and returns
/// the chains' results in chain order, whatever the scheduling. A chain that fails or sees the
/// cancellation sets `stop`, which the others poll to end early; a real failure is reported
/// ahead of the cancellations it caused, and a panicking chain becomes an error.
pub(crate) fn run_chains<T, F>(
    settings: &McmcSettings,
    cancel: CancelCheck,
    chain: F,
) -> Result<Vec<T>, SamplerError>
where
    T: Send,
    F: Fn(usize, &AtomicBool) -> Result<T, SamplerError> + Sync,
{
    if settings.chains == 0 {
        return Err(SamplerError::Failed("at least one chain is needed".into()));
    }
    let threads = settings
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, settings.chains);
    let next_chain = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let slots: Vec<Mutex<Option<Result<T, SamplerError>>>> =
        (0..settings.chains).map(|_| Mutex::new(None)).collect();
    let worker = || loop {
        let c = next_chain.fetch_add(1, Ordering::Relaxed);
        if c >= settings.chains {
            break;
        }
        let result = if stop.load(Ordering::Relaxed) || cancel() {
            Err(SamplerError::Cancelled)
        } else {
            catch_unwind(AssertUnwindSafe(|| chain(c, &stop))).unwrap_or_else(|panic| {
                let msg = panic_message(&*panic);
                Err(SamplerError::Failed(format!("chain {c} panicked: {msg}")))
            })
        };
        if result.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        if let Ok(mut slot) = slots[c].lock() {
            *slot = Some(result);
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(worker);
        }
        // The calling thread is one of the workers.
        worker();
    });
    let results: Vec<Option<Result<T, SamplerError>>> = slots
        .into_iter()
        .map(|m| m.into_inner().ok().flatten())
        .collect();
    if let Some(e) = results.iter().flatten().find_map(|r| match r {
        Err(e @ SamplerError::Failed(_)) => Some(e.clone()),
        _ => None,
    }) {
        return Err(e);
    }
    let mut chains = Vec::with_capacity(settings.chains);
    for r in results {
        match r {
            Some(Ok(c)) => chains.push(c),
            Some(Err(e)) => return Err(e),
            None => return Err(SamplerError::Cancelled),
        }
    }
    Ok(chains)
}

/// Settings for samplers' unit tests: `chains` chains of `warmup` + `draws` iterations.
#[cfg(test)]
pub(crate) fn test_settings(chains: usize, warmup: usize, draws: usize, seed: u64) -> McmcSettings {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(chains: usize, threads: usize) -> McmcSettings {
        McmcSettings {
            chains,
            warmup_per_chain: 0,
            draws_per_chain: 0,
            thin: 1,
            seed: 1,
            target_accept: 0.9,
            max_depth: 10,
            threads: Some(threads),
        }
    }

    #[test]
    fn results_come_back_in_chain_order() {
        let never = || false;
        let chains = run_chains(&settings(5, 2), &never, |c, _| Ok(c * 10)).unwrap();
        assert_eq!(chains, vec![0, 10, 20, 30, 40]);
    }

    #[test]
    fn a_panicking_chain_is_an_error_that_names_it() {
        let never = || false;
        let outcome = run_chains(&settings(4, 2), &never, |c, _| {
            if c == 2 {
                panic!("boom in chain {c}");
            }
            Ok(c)
        });
        assert_eq!(
            outcome,
            Err(SamplerError::Failed(
                "chain 2 panicked: boom in chain 2".into()
            ))
        );
    }
}
