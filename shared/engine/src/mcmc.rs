//! What every sampler takes and returns.

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
