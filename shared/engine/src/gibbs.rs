//! Gibbs sampler with data augmentation for the posterior of calibration-model.md §7, as in §12
//! with λ = 0 (no identity indicator).
//!
//! Every death counted by algorithm k under VA cause j gets a latent true cause i. One sweep:
//! 1. allocate the deaths of each (k, j) to true causes,
//!    `Multinomial(a[k, j]; w_i ∝ p_i M_k[i, j])`;
//! 2. for Dirichlet terms, draw each calibrated row
//!    `M_k[i, S_k] ~ Dirichlet(α[i, S_k] + n[k, i, S_k])`;
//! 3. draw `p ~ Dirichlet(p_prior + t)`, with `t[i]` the deaths allocated to true cause i.
//!
//! Each chain uses its own ChaCha8 stream: seed `settings.seed`, stream = chain index, so the
//! draws do not depend on how chains are spread over threads.

use std::sync::atomic::{AtomicBool, Ordering};

use rand::rngs::ChaCha8Rng;
use rand::{Rng, RngExt, SeedableRng};
use rand_distr::{Binomial, Distribution, Gamma, Open01};

use crate::mcmc::{
    run_chains, CancelCheck, ChainDraws, McmcSettings, Sampler, SamplerError, Samples,
};
use crate::model::{Misclassification, ModelSpec};

/// Sweeps between two polls of the cancel check.
const CANCEL_POLL_SWEEPS: usize = 1000;

/// The Gibbs sampler as a [`Sampler`].
#[derive(Debug, Clone, Copy)]
pub struct GibbsSampler;

impl Sampler for GibbsSampler {
    fn name(&self) -> &'static str {
        "gibbs"
    }

    fn sample(
        &self,
        spec: &ModelSpec,
        settings: &McmcSettings,
        cancel: CancelCheck,
    ) -> Result<Samples, SamplerError> {
        sample_gibbs(spec, settings, cancel)
    }
}

/// Draws from the posterior of `spec` with the data-augmentation Gibbs sampler.
///
/// Per chain: `warmup_per_chain` burn-in sweeps, then every `thin`-th sweep is kept until
/// `draws_per_chain` draws of `p` are kept. The sampler needs whole-number counts (the latent
/// allocation counts deaths); other counts, malformed matrices and a likelihood that is zero
/// everywhere are reported as `SamplerError::Failed`.
pub fn sample_gibbs(
    spec: &ModelSpec,
    settings: &McmcSettings,
    cancel: CancelCheck,
) -> Result<Samples, SamplerError> {
    let model = Prepared::new(spec)?;
    if settings.chains == 0 {
        return Err(failed("at least one chain is needed"));
    }
    if settings.thin == 0 {
        return Err(failed("thin must be at least 1"));
    }
    let total_sweeps = settings
        .draws_per_chain
        .checked_mul(settings.thin)
        .and_then(|s| s.checked_add(settings.warmup_per_chain))
        .ok_or_else(|| failed("number of sweeps overflows"))?;

    run_chains(settings, cancel, |chain, stop| {
        run_chain(&model, settings, chain, total_sweeps, cancel, stop)
    })
    .map(|chains| Samples { chains })
}

fn failed(msg: impl Into<String>) -> SamplerError {
    SamplerError::Failed(msg.into())
}

/// The deaths of one algorithm under one VA cause, and where they can come from.
#[derive(Debug)]
struct Column {
    count: u64,
    /// Candidate true causes: `candidates[first..first + len]`.
    first: usize,
    len: usize,
    /// Allocations feed a Dirichlet row update (the column is in S_k of a Dirichlet term).
    tracked: bool,
}

/// A possible true cause `i` of a column; `entry` indexes the term's matrix storage (and its
/// allocation counts) for the weight `M_k[i, j]`.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    cause: usize,
    entry: usize,
}

#[derive(Debug)]
enum TermKind {
    /// `matrix` is the fixed d × d matrix, row-major.
    Fixed { matrix: Vec<f64> },
    /// Rows and columns are positions in `calibrated` (S_k); `alpha` and the state's matrix
    /// are |S_k| × |S_k|, row-major.
    Dirichlet {
        calibrated: Vec<usize>,
        alpha: Vec<f64>,
    },
}

#[derive(Debug)]
struct PreparedTerm {
    columns: Vec<Column>,
    candidates: Vec<Candidate>,
    kind: TermKind,
}

impl PreparedTerm {
    /// Size of the matrix storage (and of the allocation counts) of this term.
    fn storage_len(&self) -> usize {
        match &self.kind {
            TermKind::Fixed { matrix } => matrix.len(),
            TermKind::Dirichlet { calibrated, .. } => calibrated.len() * calibrated.len(),
        }
    }

    /// The starting matrix: the fixed one, or every row at its prior mean.
    fn initial_matrix(&self) -> Vec<f64> {
        match &self.kind {
            TermKind::Fixed { matrix } => matrix.clone(),
            TermKind::Dirichlet { calibrated, alpha } => {
                let s = calibrated.len();
                let mut m = alpha.clone();
                for row in m.chunks_mut(s.max(1)) {
                    let total: f64 = row.iter().sum();
                    row.iter_mut().for_each(|x| *x /= total);
                }
                m
            }
        }
    }
}

/// The model in the form the sweeps use, validated once and shared by all chains.
#[derive(Debug)]
pub(crate) struct Prepared {
    p_prior: Vec<f64>,
    terms: Vec<PreparedTerm>,
    /// Largest number of candidates of any column (scratch size).
    max_candidates: usize,
}

impl Prepared {
    pub(crate) fn new(spec: &ModelSpec) -> Result<Self, SamplerError> {
        let d = spec.dim();
        if d < 2 {
            return Err(failed(format!("the CSMF needs at least 2 causes, got {d}")));
        }
        if spec.p_prior.iter().any(|a| !(a.is_finite() && *a > 0.0)) {
            return Err(failed("p_prior must be finite and positive"));
        }
        let mut terms = Vec::with_capacity(spec.terms.len());
        for (k, term) in spec.terms.iter().enumerate() {
            let counts =
                whole_counts(&term.counts, d).map_err(|e| failed(format!("term {k}: {e}")))?;
            let prepared = match &term.misclassification {
                Misclassification::Fixed(m) => prepare_fixed(&counts, m, d),
                Misclassification::Dirichlet(alpha) => {
                    prepare_dirichlet(&counts, &term.calibrated, alpha, d)
                }
            }
            .map_err(|e| failed(format!("term {k}: {e}")))?;
            terms.push(prepared);
        }
        let max_candidates = terms
            .iter()
            .flat_map(|t| t.columns.iter().map(|c| c.len))
            .max()
            .unwrap_or(0);
        Ok(Self {
            p_prior: spec.p_prior.clone(),
            terms,
            max_candidates,
        })
    }
}

/// Counts as whole numbers: the latent allocation needs an integer number of deaths.
fn whole_counts(counts: &[f64], d: usize) -> Result<Vec<u64>, String> {
    if counts.len() != d {
        return Err(format!("{} counts for {d} causes", counts.len()));
    }
    counts
        .iter()
        .map(|&c| {
            let r = c.round();
            if !c.is_finite() || c < 0.0 || (c - r).abs() > 1e-9 * r.max(1.0) || r > 1e15 {
                Err(format!(
                    "count {c} is not a whole number of deaths (the Gibbs sampler needs integer counts)"
                ))
            } else {
                Ok(r as u64)
            }
        })
        .collect()
}

fn prepare_fixed(counts: &[u64], m: &[Vec<f64>], d: usize) -> Result<PreparedTerm, String> {
    if m.len() != d || m.iter().any(|row| row.len() != d) {
        return Err(format!("the fixed matrix must be {d} × {d}"));
    }
    if m.iter().flatten().any(|x| !(x.is_finite() && *x >= 0.0)) {
        return Err("the fixed matrix must be finite and non-negative".into());
    }
    let matrix: Vec<f64> = m.iter().flatten().copied().collect();
    let mut columns = Vec::new();
    let mut candidates = Vec::new();
    for (j, &count) in counts.iter().enumerate() {
        if count == 0 {
            continue;
        }
        let first = candidates.len();
        candidates.extend(
            (0..d)
                .filter(|&i| matrix[i * d + j] > 0.0)
                .map(|i| Candidate {
                    cause: i,
                    entry: i * d + j,
                }),
        );
        let len = candidates.len() - first;
        if len == 0 {
            return Err(format!(
                "VA cause {j} has deaths but probability 0 under every true cause"
            ));
        }
        columns.push(Column {
            count,
            first,
            len,
            tracked: false,
        });
    }
    Ok(PreparedTerm {
        columns,
        candidates,
        kind: TermKind::Fixed { matrix },
    })
}

fn prepare_dirichlet(
    counts: &[u64],
    calibrated: &[bool],
    alpha: &[Vec<f64>],
    d: usize,
) -> Result<PreparedTerm, String> {
    if calibrated.len() != d {
        return Err(format!(
            "{} calibrated flags for {d} causes",
            calibrated.len()
        ));
    }
    if alpha.len() != d || alpha.iter().any(|row| row.len() != d) {
        return Err(format!("the Dirichlet parameters must be {d} × {d}"));
    }
    let set: Vec<usize> = (0..d).filter(|&j| calibrated[j]).collect();
    let s = set.len();
    let mut block = Vec::with_capacity(s * s);
    for &i in &set {
        for &j in &set {
            let a = alpha[i][j];
            if !(a.is_finite() && a > 0.0) {
                return Err(format!(
                    "Dirichlet parameter [{i}][{j}] = {a} must be finite and positive"
                ));
            }
            block.push(a);
        }
    }
    let mut columns = Vec::new();
    let mut candidates = Vec::new();
    for (j, &count) in counts.iter().enumerate() {
        if count == 0 {
            continue;
        }
        let first = candidates.len();
        match set.iter().position(|&c| c == j) {
            // Calibrated VA cause: any calibrated true cause can have produced it.
            Some(col) => candidates.extend(set.iter().enumerate().map(|(row, &i)| Candidate {
                cause: i,
                entry: row * s + col,
            })),
            // Uncalibrated VA cause: identity row, so the true cause is j itself.
            None => candidates.push(Candidate { cause: j, entry: 0 }),
        }
        columns.push(Column {
            count,
            first,
            len: candidates.len() - first,
            tracked: calibrated[j],
        });
    }
    Ok(PreparedTerm {
        columns,
        candidates,
        kind: TermKind::Dirichlet {
            calibrated: set,
            alpha: block,
        },
    })
}

/// Per-chain state and scratch, all allocated before the first sweep.
///
/// The Markov state is `(p, matrices)` alone: a sweep re-draws every allocation from them
/// before using any, so the allocations and scratch carry nothing from one sweep to the next.
pub(crate) struct ChainState {
    pub(crate) p: Vec<f64>,
    /// Current matrix of each term (see `PreparedTerm::storage_len`).
    matrices: Vec<Vec<f64>>,
    /// Allocation counts of each Dirichlet term, laid out like its matrix.
    allocations: Vec<Vec<u64>>,
    /// Deaths allocated to each true cause in this sweep.
    totals: Vec<f64>,
    weights: Vec<f64>,
    suffix: Vec<f64>,
    draws_scratch: Vec<f64>,
    params_scratch: Vec<f64>,
}

impl ChainState {
    pub(crate) fn new(model: &Prepared) -> Self {
        let d = model.p_prior.len();
        let widest = model
            .terms
            .iter()
            .map(|t| match &t.kind {
                TermKind::Dirichlet { calibrated, .. } => calibrated.len(),
                TermKind::Fixed { .. } => 0,
            })
            .max()
            .unwrap_or(0)
            .max(d);
        Self {
            p: vec![1.0 / d as f64; d],
            matrices: model
                .terms
                .iter()
                .map(PreparedTerm::initial_matrix)
                .collect(),
            allocations: model
                .terms
                .iter()
                .map(|t| match t.kind {
                    TermKind::Dirichlet { .. } => vec![0; t.storage_len()],
                    TermKind::Fixed { .. } => Vec::new(),
                })
                .collect(),
            totals: vec![0.0; d],
            weights: vec![0.0; model.max_candidates],
            suffix: vec![0.0; model.max_candidates],
            draws_scratch: vec![0.0; widest],
            params_scratch: vec![0.0; widest],
        }
    }

    pub(crate) fn sweep<R: Rng>(
        &mut self,
        model: &Prepared,
        rng: &mut R,
    ) -> Result<(), SamplerError> {
        self.totals.iter_mut().for_each(|t| *t = 0.0);

        // 1. Allocation of every death to a true cause.
        for (k, term) in model.terms.iter().enumerate() {
            let matrix = &self.matrices[k];
            let alloc = &mut self.allocations[k];
            alloc.iter_mut().for_each(|n| *n = 0);
            for col in &term.columns {
                let cands = &term.candidates[col.first..col.first + col.len];
                if let [only] = cands {
                    self.totals[only.cause] += col.count as f64;
                    if col.tracked {
                        alloc[only.entry] += col.count;
                    }
                    continue;
                }
                let w = &mut self.weights[..cands.len()];
                for (wi, c) in w.iter_mut().zip(cands) {
                    *wi = self.p[c.cause] * matrix[c.entry];
                }
                let suffix = &mut self.suffix[..cands.len()];
                let mut remaining = col.count;
                let mut acc = 0.0;
                for idx in (0..cands.len()).rev() {
                    acc += w[idx];
                    suffix[idx] = acc;
                }
                if !(acc > 0.0 && acc.is_finite()) {
                    return Err(failed("allocation weights vanished (zero likelihood)"));
                }
                // Sequential binomials: category c gets Bin(remaining, w_c / Σ_{c' ≥ c} w_c').
                for (idx, c) in cands.iter().enumerate() {
                    if remaining == 0 {
                        break;
                    }
                    let x = if idx + 1 == cands.len() {
                        remaining
                    } else if suffix[idx] > 0.0 {
                        let prob = (w[idx] / suffix[idx]).clamp(0.0, 1.0);
                        Binomial::new(remaining, prob)
                            .map_err(|e| failed(format!("binomial draw: {e}")))?
                            .sample(rng)
                    } else {
                        0
                    };
                    remaining -= x;
                    self.totals[c.cause] += x as f64;
                    if col.tracked {
                        alloc[c.entry] += x;
                    }
                }
            }
        }

        // 2. Misclassification rows of the Dirichlet terms.
        for (k, term) in model.terms.iter().enumerate() {
            if let TermKind::Dirichlet { calibrated, alpha } = &term.kind {
                let s = calibrated.len();
                let matrix = &mut self.matrices[k];
                let alloc = &self.allocations[k];
                for row in 0..s {
                    let range = row * s..(row + 1) * s;
                    let params = &mut self.params_scratch[..s];
                    for ((a, &prior), &n) in params
                        .iter_mut()
                        .zip(&alpha[range.clone()])
                        .zip(&alloc[range.clone()])
                    {
                        *a = prior + n as f64;
                    }
                    sample_dirichlet(
                        rng,
                        params,
                        &mut self.draws_scratch[..s],
                        &mut matrix[range],
                    );
                }
            }
        }

        // 3. The CSMF.
        let d = self.p.len();
        let params = &mut self.params_scratch[..d];
        for ((a, &prior), &t) in params.iter_mut().zip(&model.p_prior).zip(&self.totals) {
            *a = prior + t;
        }
        sample_dirichlet(rng, params, &mut self.draws_scratch[..d], &mut self.p);
        if !self.p.iter().all(|x| x.is_finite()) {
            return Err(failed("non-finite CSMF draw"));
        }
        Ok(())
    }
}

/// Only the reference tools (tempering, which needs likelihood ratios) use this.
#[cfg(any(test, feature = "reference-tools"))]
impl Prepared {
    /// The observed-data log-likelihood of the state `(p, matrices)` under this model's counts,
    /// without the multinomial coefficients: `Σ_k Σ_j a[k, j] ln (M_kᵀ p)_j`.
    pub(crate) fn log_likelihood(&self, state: &ChainState) -> f64 {
        let mut total = 0.0;
        for (term, matrix) in self.terms.iter().zip(&state.matrices) {
            let dirichlet = matches!(term.kind, TermKind::Dirichlet { .. });
            for col in &term.columns {
                let cands = &term.candidates[col.first..col.first + col.len];
                let q: f64 = if dirichlet && !col.tracked {
                    // A VA cause outside S_k: its identity row makes P(VA cause j) = p_j
                    // (the candidate's entry is a placeholder).
                    state.p[cands[0].cause]
                } else {
                    cands
                        .iter()
                        .map(|c| state.p[c.cause] * matrix[c.entry])
                        .sum()
                };
                total += col.count as f64 * q.ln();
            }
        }
        total
    }
}

/// Only the reference tools (tempering, which exchanges states between replicas) use this.
#[cfg(any(test, feature = "reference-tools"))]
impl ChainState {
    /// Exchanges the Markov states `(p, matrices)` of two chains of models with the same
    /// structure; each keeps its scratch, which is sized for its own model's counts.
    pub(crate) fn swap_state(&mut self, other: &mut ChainState) {
        std::mem::swap(&mut self.p, &mut other.p);
        std::mem::swap(&mut self.matrices, &mut other.matrices);
    }
}

fn run_chain(
    model: &Prepared,
    settings: &McmcSettings,
    chain: usize,
    total_sweeps: usize,
    cancel: CancelCheck,
    stop: &AtomicBool,
) -> Result<ChainDraws, SamplerError> {
    let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
    rng.set_stream(chain as u64);
    let mut state = ChainState::new(model);
    let mut draws = Vec::with_capacity(settings.draws_per_chain);
    let mut until_poll = 0;
    let mut until_keep = settings.thin;
    for sweep in 0..total_sweeps {
        if until_poll == 0 {
            if stop.load(Ordering::Relaxed) || cancel() {
                return Err(SamplerError::Cancelled);
            }
            until_poll = CANCEL_POLL_SWEEPS;
        }
        until_poll -= 1;
        state.sweep(model, &mut rng)?;
        if sweep >= settings.warmup_per_chain {
            until_keep -= 1;
            if until_keep == 0 {
                draws.push(state.p.clone());
                until_keep = settings.thin;
            }
        }
    }
    Ok(ChainDraws {
        draws,
        divergences: 0,
        max_depth_hits: 0,
    })
}

/// Writes a `Dirichlet(params)` draw into `out`, using `logs` as scratch.
///
/// With at least one shape ≥ 1 the normalised plain gamma variates are used: that component is
/// a positive number of moderate size, so the sum cannot vanish, and a component that
/// underflows to 0 would be below ~1e-300 after normalisation anyway. With every shape below 1
/// (down to 0.006), all variates can underflow together, so they are drawn on the log scale,
/// log Gamma(a) = log Gamma(a + 1) + log(U)/a (the Marsaglia–Tsang boost), and normalised
/// with log-sum-exp.
fn sample_dirichlet<R: Rng>(rng: &mut R, params: &[f64], logs: &mut [f64], out: &mut [f64]) {
    if params.iter().any(|&a| a >= 1.0) {
        let mut total = 0.0;
        for (o, &a) in out.iter_mut().zip(params) {
            *o = match Gamma::new(a, 1.0) {
                Ok(g) => g.sample(rng),
                Err(_) => f64::NAN,
            };
            total += *o;
        }
        out.iter_mut().for_each(|o| *o /= total);
        return;
    }
    let mut max = f64::NEG_INFINITY;
    for (l, &a) in logs.iter_mut().zip(params) {
        *l = match Gamma::new(a + 1.0, 1.0) {
            Ok(g) => {
                let u: f64 = rng.sample(Open01);
                g.sample(rng).ln() + u.ln() / a
            }
            Err(_) => f64::NAN,
        };
        max = max.max(*l);
    }
    let mut total = 0.0;
    for (o, &l) in out.iter_mut().zip(logs.iter()) {
        *o = (l - max).exp();
        total += *o;
    }
    out.iter_mut().for_each(|o| *o /= total);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::ess_bulk;
    use crate::model::AlgorithmTerm;
    use std::sync::atomic::AtomicUsize;

    fn never() -> bool {
        false
    }

    fn settings(chains: usize, warmup: usize, draws: usize, thin: usize) -> McmcSettings {
        McmcSettings {
            chains,
            warmup_per_chain: warmup,
            draws_per_chain: draws,
            thin,
            seed: 20240611,
            target_accept: 0.9,
            max_depth: 10,
            threads: None,
        }
    }

    fn identity(d: usize) -> Vec<Vec<f64>> {
        (0..d)
            .map(|i| (0..d).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
            .collect()
    }

    fn fixed_term(counts: &[f64], m: Vec<Vec<f64>>) -> AlgorithmTerm {
        AlgorithmTerm {
            counts: counts.to_vec(),
            calibrated: vec![true; counts.len()],
            misclassification: Misclassification::Fixed(m),
        }
    }

    fn dirichlet_term(counts: &[f64], calibrated: &[bool], alpha: Vec<Vec<f64>>) -> AlgorithmTerm {
        AlgorithmTerm {
            counts: counts.to_vec(),
            calibrated: calibrated.to_vec(),
            misclassification: Misclassification::Dirichlet(alpha),
        }
    }

    /// Checks the shape of the output and that every draw is a probability vector.
    fn assert_valid(samples: &Samples, chains: usize, draws: usize, d: usize) {
        assert_eq!(samples.chains.len(), chains);
        for c in &samples.chains {
            assert_eq!(c.draws.len(), draws);
            assert_eq!((c.divergences, c.max_depth_hits), (0, 0));
            for p in &c.draws {
                assert_eq!(p.len(), d);
                assert!(p.iter().all(|x| x.is_finite() && *x >= 0.0), "{p:?}");
                assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{p:?}");
            }
        }
    }

    fn coordinate(samples: &Samples, i: usize) -> Vec<Vec<f64>> {
        samples
            .chains
            .iter()
            .map(|c| c.draws.iter().map(|p| p[i]).collect())
            .collect()
    }

    /// Lanczos approximation (g = 7, 9 terms), ~1e-15 relative for x > 0.
    fn ln_gamma(x: f64) -> f64 {
        const C: [f64; 9] = [
            0.999_999_999_999_809_9,
            676.520_368_121_885_1,
            -1_259.139_216_722_402_8,
            771.323_428_777_653_1,
            -176.615_029_162_140_6,
            12.507_343_278_686_905,
            -0.138_571_095_265_720_12,
            9.984_369_578_019_572e-6,
            1.505_632_735_149_311_6e-7,
        ];
        if x < 0.5 {
            let pi = std::f64::consts::PI;
            return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
        }
        let x = x - 1.0;
        let t = x + 7.5;
        let series = C[1..]
            .iter()
            .enumerate()
            .fold(C[0], |acc, (k, c)| acc + c / (x + k as f64 + 1.0));
        0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + series.ln()
    }

    fn ln_multi_beta(a: &[f64]) -> f64 {
        a.iter().map(|&x| ln_gamma(x)).sum::<f64>() - ln_gamma(a.iter().sum())
    }

    /// Every allocation of the deaths to true causes, with its posterior log weight and the
    /// deaths per true cause it implies (only feasible for a handful of deaths).
    struct Enumeration<'a> {
        spec: &'a ModelSpec,
        /// (term, VA cause, deaths, candidate true causes) of every column with deaths.
        columns: Vec<(usize, usize, u64, Vec<usize>)>,
        /// `alloc[k][i][j]`: deaths of term k with true cause i and VA cause j.
        alloc: Vec<Vec<Vec<u64>>>,
        log_weights: Vec<f64>,
        totals: Vec<Vec<f64>>,
    }

    impl Enumeration<'_> {
        /// Splits column `c`'s remaining `left` deaths over its candidates from `pos` on.
        fn split(&mut self, c: usize, pos: usize, left: u64, log_coef: f64) {
            if c == self.columns.len() {
                return self.finish(log_coef);
            }
            let (k, j, _, ref rows) = self.columns[c];
            let (i, last) = (rows[pos], pos + 1 == rows.len());
            for x in if last { left..=left } else { 0..=left } {
                self.alloc[k][i][j] = x;
                // Multinomial coefficient: a! / Π x!, the a! being added when a column starts.
                let coef = log_coef - ln_gamma(x as f64 + 1.0);
                if last {
                    let next = self.columns.get(c + 1).map_or(0, |col| col.2);
                    self.split(c + 1, 0, next, coef + ln_gamma(next as f64 + 1.0));
                } else {
                    self.split(c, pos + 1, left - x, coef);
                }
            }
            self.alloc[k][i][j] = 0;
        }

        /// Adds the complete-data evidence of the current allocation.
        fn finish(&mut self, log_coef: f64) {
            let spec = self.spec;
            let d = spec.dim();
            let mut lw = log_coef;
            let mut t = vec![0.0; d];
            for (k, term) in spec.terms.iter().enumerate() {
                let n = &self.alloc[k];
                for i in 0..d {
                    t[i] += n[i].iter().sum::<u64>() as f64;
                }
                match &term.misclassification {
                    Misclassification::Fixed(m) => {
                        for i in 0..d {
                            for j in 0..d {
                                if n[i][j] > 0 {
                                    lw += n[i][j] as f64 * m[i][j].ln();
                                }
                            }
                        }
                    }
                    Misclassification::Dirichlet(alpha) => {
                        let s: Vec<usize> = (0..d).filter(|&i| term.calibrated[i]).collect();
                        for &i in &s {
                            let prior: Vec<f64> = s.iter().map(|&j| alpha[i][j]).collect();
                            let post: Vec<f64> =
                                s.iter().map(|&j| alpha[i][j] + n[i][j] as f64).collect();
                            lw += ln_multi_beta(&post) - ln_multi_beta(&prior);
                        }
                    }
                }
            }
            let post: Vec<f64> = spec.p_prior.iter().zip(&t).map(|(g, t)| g + t).collect();
            lw += ln_multi_beta(&post) - ln_multi_beta(&spec.p_prior);
            self.log_weights.push(lw);
            self.totals.push(t);
        }
    }

    /// Exact posterior mean and second moment of every p_i: given an allocation, p is
    /// Dirichlet(p_prior + t), so the moments are a weighted sum over all allocations.
    fn exact_moments(spec: &ModelSpec) -> (Vec<f64>, Vec<f64>) {
        let d = spec.dim();
        let mut columns = Vec::new();
        for (k, term) in spec.terms.iter().enumerate() {
            for j in (0..d).filter(|&j| term.counts[j] > 0.0) {
                let rows: Vec<usize> = match &term.misclassification {
                    Misclassification::Fixed(m) => (0..d).filter(|&i| m[i][j] > 0.0).collect(),
                    Misclassification::Dirichlet(_) if term.calibrated[j] => {
                        (0..d).filter(|&i| term.calibrated[i]).collect()
                    }
                    Misclassification::Dirichlet(_) => vec![j],
                };
                columns.push((k, j, term.counts[j] as u64, rows));
            }
        }
        let first = columns.first().map_or(0, |c| c.2);
        let mut e = Enumeration {
            spec,
            columns,
            alloc: vec![vec![vec![0; d]; d]; spec.terms.len()],
            log_weights: Vec::new(),
            totals: Vec::new(),
        };
        e.split(0, 0, first, ln_gamma(first as f64 + 1.0));

        let max = e
            .log_weights
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = e.log_weights.iter().map(|l| (l - max).exp()).collect();
        let total: f64 = w.iter().sum();
        let (mut m1, mut m2) = (vec![0.0; d], vec![0.0; d]);
        for (wi, t) in w.iter().zip(&e.totals) {
            let post: Vec<f64> = spec.p_prior.iter().zip(t).map(|(g, t)| g + t).collect();
            let a0: f64 = post.iter().sum();
            for i in 0..d {
                m1[i] += wi / total * post[i] / a0;
                m2[i] += wi / total * post[i] * (post[i] + 1.0) / (a0 * (a0 + 1.0));
            }
        }
        (m1, m2)
    }

    /// Compares the sampled mean and second moment of every p_i with the exact ones, within
    /// `z` Monte Carlo standard errors (sample sd over the square root of the bulk ESS).
    fn assert_moments(samples: &Samples, m1: &[f64], m2: &[f64], z: f64) {
        for i in 0..m1.len() {
            let chains = coordinate(samples, i);
            let ess = ess_bulk(&chains);
            let all: Vec<f64> = chains.concat();
            for (power, exact) in [(1, m1[i]), (2, m2[i])] {
                let x: Vec<f64> = all.iter().map(|v| v.powi(power)).collect();
                let n = x.len() as f64;
                let mean = x.iter().sum::<f64>() / n;
                let sd = (x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
                let se = sd / ess.sqrt();
                assert!(
                    (mean - exact).abs() < z * se,
                    "E[p[{i}]^{power}]: sampled {mean}, exact {exact} (se {se}, ess {ess})"
                );
            }
        }
    }

    /// Regularised incomplete beta I_x(a, b) for whole a, b: P(Bin(a + b − 1, x) ≥ a).
    fn beta_cdf_whole(x: f64, a: u64, b: u64) -> f64 {
        let n = a + b - 1;
        (a..=n)
            .map(|j| {
                let ln_choose = ln_gamma(n as f64 + 1.0)
                    - ln_gamma(j as f64 + 1.0)
                    - ln_gamma((n - j) as f64 + 1.0);
                (ln_choose + j as f64 * x.ln() + (n - j) as f64 * (1.0 - x).ln()).exp()
            })
            .sum()
    }

    #[test]
    fn dirichlet_draws_are_exact_with_some_small_shapes() {
        let params = [0.006, 0.3, 1.0, 2.5];
        let a0: f64 = params.iter().sum();
        let n = 200_000;
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (mut logs, mut p) = ([0.0; 4], [0.0; 4]);
        let (mut sum, mut sum_sq) = ([0.0; 4], [0.0; 4]);
        let mut tiny = 0usize;
        for _ in 0..n {
            sample_dirichlet(&mut rng, &params, &mut logs, &mut p);
            assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            for i in 0..4 {
                sum[i] += p[i];
                sum_sq[i] += p[i] * p[i];
            }
            tiny += usize::from(p[0] < 1e-100);
        }
        let nf = n as f64;
        for (i, &a) in params.iter().enumerate() {
            let mean = a / a0;
            let var = mean * (1.0 - mean) / (a0 + 1.0);
            let se = (var / nf).sqrt();
            assert!(
                (sum[i] / nf - mean).abs() < 4.5 * se,
                "mean of component {i}"
            );
            // Raw moments of Beta(a, a0 − a): E[x^k] = Π_{r<k} (a + r)/(a0 + r).
            let moment = |k: i32| {
                (0..k)
                    .map(|r| (a + r as f64) / (a0 + r as f64))
                    .product::<f64>()
            };
            let se2 = ((moment(4) - moment(2).powi(2)) / nf).sqrt();
            assert!(
                (sum_sq[i] / nf - moment(2)).abs() < 4.5 * se2,
                "E[x²] of component {i}"
            );
        }
        // The far lower tail, which plain normalised gamma variates flush to 0:
        // P(X < ε) ≈ ε^a / (a B(a, b)) for X ~ Beta(a, b) with small a.
        let (a, b) = (params[0], a0 - params[0]);
        let expected = (a * 1e-100f64.ln() - a.ln() - ln_multi_beta(&[a, b])).exp();
        let frac = tiny as f64 / nf;
        let se = (expected * (1.0 - expected) / nf).sqrt();
        assert!(
            (frac - expected).abs() < 4.5 * se,
            "P(X < 1e-100) = {frac}, want {expected}"
        );
    }

    #[test]
    fn dirichlet_draws_are_exact_when_every_shape_is_small() {
        // The log-scale path: every shape below 1.
        let params = [0.006, 0.02, 0.5];
        let a0: f64 = params.iter().sum();
        let n = 100_000;
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let (mut logs, mut p, mut sum) = ([0.0; 3], [0.0; 3], [0.0; 3]);
        for _ in 0..n {
            sample_dirichlet(&mut rng, &params, &mut logs, &mut p);
            assert!(p.iter().all(|x| x.is_finite() && *x >= 0.0));
            assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            sum.iter_mut().zip(&p).for_each(|(s, x)| *s += x);
        }
        for (i, &a) in params.iter().enumerate() {
            let mean = a / a0;
            let se = (mean * (1.0 - mean) / (a0 + 1.0) / n as f64).sqrt();
            let got = sum[i] / n as f64;
            assert!(
                (got - mean).abs() < 4.5 * se,
                "component {i}: {got} vs {mean}"
            );
        }
    }

    #[test]
    fn fixed_identity_term_gives_the_conjugate_dirichlet() {
        let prior = [1.0, 2.0, 1.0, 3.0];
        let counts = [10.0, 30.0, 5.0, 55.0];
        let spec = ModelSpec {
            p_prior: prior.to_vec(),
            terms: vec![fixed_term(&counts, identity(4))],
        };
        let (chains, draws) = (4, 5000);
        let samples = sample_gibbs(&spec, &settings(chains, 10, draws, 1), &never).unwrap();
        assert_valid(&samples, chains, draws, 4);

        // Draws are independent here (the allocation is deterministic), so the Monte Carlo
        // error of a mean is sd / √N and that of a quantile's CDF value √(q(1 − q)/N).
        let post: Vec<u64> = prior
            .iter()
            .zip(&counts)
            .map(|(a, c)| (a + c) as u64)
            .collect();
        let a0: u64 = post.iter().sum();
        let n = (chains * draws) as f64;
        for (i, &a) in post.iter().enumerate() {
            let mut x: Vec<f64> = coordinate(&samples, i).concat();
            let mean = x.iter().sum::<f64>() / n;
            let exact = a as f64 / a0 as f64;
            let sd = (exact * (1.0 - exact) / (a0 as f64 + 1.0)).sqrt();
            assert!(
                (mean - exact).abs() < 4.5 * sd / n.sqrt(),
                "p[{i}] mean {mean} vs {exact}"
            );
            x.sort_by(f64::total_cmp);
            for q in [0.025, 0.5, 0.975] {
                let empirical = x[(q * n) as usize];
                let cdf = beta_cdf_whole(empirical, a, a0 - a);
                let tol = 4.5 * (q * (1.0 - q) / n).sqrt();
                assert!((cdf - q).abs() < tol, "p[{i}] q{q}: F(x̂) = {cdf}");
            }
        }
    }

    #[test]
    fn dirichlet_term_without_deaths_leaves_the_prior() {
        let prior = [2.0, 3.0, 5.0];
        let alpha = vec![
            vec![4.0, 0.5, 0.3],
            vec![0.2, 3.0, 0.6],
            vec![0.006, 0.1, 2.0],
        ];
        let spec = ModelSpec {
            p_prior: prior.to_vec(),
            terms: vec![dirichlet_term(&[0.0; 3], &[true; 3], alpha)],
        };
        let samples = sample_gibbs(&spec, &settings(2, 0, 10_000, 1), &never).unwrap();
        assert_valid(&samples, 2, 10_000, 3);
        let a0: f64 = prior.iter().sum();
        let m1: Vec<f64> = prior.iter().map(|a| a / a0).collect();
        let m2: Vec<f64> = prior
            .iter()
            .map(|a| a * (a + 1.0) / (a0 * (a0 + 1.0)))
            .collect();
        assert_moments(&samples, &m1, &m2, 4.5);
    }

    #[test]
    fn dirichlet_term_matches_exact_enumeration() {
        // S = {0, 1}; cause 2 is uncalibrated, so its deaths are its own.
        let alpha = vec![
            vec![2.5, 0.7, 9.0],
            vec![0.4, 3.0, 9.0],
            vec![9.0, 9.0, 9.0],
        ];
        let spec = ModelSpec {
            p_prior: vec![1.2, 0.8, 1.5],
            terms: vec![dirichlet_term(
                &[4.0, 3.0, 2.0],
                &[true, true, false],
                alpha,
            )],
        };
        let (m1, m2) = exact_moments(&spec);
        let samples = sample_gibbs(&spec, &settings(4, 200, 10_000, 2), &never).unwrap();
        assert_valid(&samples, 4, 10_000, 3);
        assert_moments(&samples, &m1, &m2, 4.5);
    }

    #[test]
    fn ensemble_of_dirichlet_and_fixed_terms_matches_exact_enumeration() {
        let alpha = vec![
            vec![3.0, 0.5, 1.0],
            vec![0.8, 2.0, 1.0],
            vec![1.0, 1.0, 1.0],
        ];
        let m = vec![
            vec![0.8, 0.2, 0.0],
            vec![0.1, 0.7, 0.2],
            vec![0.0, 0.0, 1.0],
        ];
        let spec = ModelSpec {
            p_prior: vec![1.0, 1.5, 0.7],
            terms: vec![
                dirichlet_term(&[3.0, 2.0, 1.0], &[true, true, false], alpha),
                fixed_term(&[2.0, 2.0, 2.0], m),
            ],
        };
        let (m1, m2) = exact_moments(&spec);
        let samples = sample_gibbs(&spec, &settings(4, 200, 10_000, 2), &never).unwrap();
        assert_valid(&samples, 4, 10_000, 3);
        assert_moments(&samples, &m1, &m2, 4.5);
    }

    fn neonatal_like_spec() -> ModelSpec {
        // Neonatal COMSA EAVA counts (calibration-model.md §2), "other" (cause 4) uncalibrated,
        // a diagonal-heavy prior with some CA CODE-sized 0.006 entries.
        let d = 6;
        let alpha: Vec<Vec<f64>> = (0..d)
            .map(|i| {
                (0..d)
                    .map(|j| match (i, j) {
                        _ if i == j => 6.0,
                        _ if (i + j) % 3 == 0 => 0.006,
                        _ => 0.4,
                    })
                    .collect()
            })
            .collect();
        let mut calibrated = vec![true; d];
        calibrated[4] = false;
        ModelSpec {
            p_prior: vec![1.0 + 6.0 * 0.1; d],
            terms: vec![dirichlet_term(
                &[44.0, 168.0, 267.0, 268.0, 29.0, 164.0],
                &calibrated,
                alpha,
            )],
        }
    }

    fn child_ensemble_spec() -> ModelSpec {
        // Child COMSA counts of the three algorithms (calibration-model.md §2), "other"
        // (cause 6) uncalibrated.
        let d = 9;
        let counts = [
            [109.0, 615.0, 487.0, 87.0, 68.0, 103.0, 0.0, 840.0, 48.0],
            [446.0, 386.0, 724.0, 115.0, 79.0, 95.0, 185.0, 628.0, 140.0],
            [371.0, 245.0, 854.0, 80.0, 181.0, 84.0, 195.0, 755.0, 33.0],
        ];
        let mut calibrated = vec![true; d];
        calibrated[6] = false;
        let terms = counts
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let alpha = (0..d)
                    .map(|i| {
                        (0..d)
                            .map(|j| {
                                if i == j {
                                    4.0
                                } else {
                                    0.05 + 0.1 * ((i + j + k) % 4) as f64
                                }
                            })
                            .collect()
                    })
                    .collect();
                dirichlet_term(c, &calibrated, alpha)
            })
            .collect();
        ModelSpec {
            p_prior: vec![1.0; d],
            terms,
        }
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let spec = child_ensemble_spec();
        let run = |threads| {
            let mut s = settings(3, 50, 200, 3);
            s.threads = threads;
            sample_gibbs(&spec, &s, &never).unwrap()
        };
        let one = run(Some(1));
        assert_valid(&one, 3, 200, 9);
        assert_eq!(one, run(Some(2)));
        assert_eq!(one, run(Some(8)));
        assert_eq!(one, run(None));
        assert_ne!(
            one.chains[0], one.chains[1],
            "chains must use different streams"
        );

        let mut other_seed = settings(3, 50, 200, 3);
        other_seed.seed += 1;
        assert_ne!(one, sample_gibbs(&spec, &other_seed, &never).unwrap());
    }

    #[test]
    fn cancel_stops_the_run() {
        let spec = neonatal_like_spec();
        let always = || true;
        assert_eq!(
            sample_gibbs(&spec, &settings(2, 10, 10, 1), &always),
            Err(SamplerError::Cancelled)
        );
        // Cancel on the third poll: the run would otherwise take 4 × 10⁸ sweeps.
        let polls = AtomicUsize::new(0);
        let later = || polls.fetch_add(1, Ordering::Relaxed) >= 2;
        assert_eq!(
            sample_gibbs(&spec, &settings(4, 100_000_000, 1000, 1), &later),
            Err(SamplerError::Cancelled)
        );
        assert!(polls.load(Ordering::Relaxed) >= 3);
    }

    #[test]
    fn tiny_dirichlet_parameters_stay_probability_vectors() {
        // Every prior entry 0.006: plain normalised gamma variates would often be all zero.
        let d = 5;
        let spec = ModelSpec {
            p_prior: vec![0.006; d],
            terms: vec![dirichlet_term(
                &[0.0, 3.0, 0.0, 0.0, 1.0],
                &[true; 5],
                vec![vec![0.006; d]; d],
            )],
        };
        let samples = sample_gibbs(&spec, &settings(2, 100, 2000, 5), &never).unwrap();
        assert_valid(&samples, 2, 2000, d);
        let spec = neonatal_like_spec();
        let samples = sample_gibbs(&spec, &settings(1, 100, 500, 2), &never).unwrap();
        assert_valid(&samples, 1, 500, 6);
    }

    #[test]
    fn warmup_and_thinning_set_the_number_of_draws() {
        let spec = neonatal_like_spec();
        let samples = sample_gibbs(&spec, &settings(2, 7, 13, 3), &never).unwrap();
        assert_valid(&samples, 2, 13, 6);
        let none = sample_gibbs(&spec, &settings(2, 7, 0, 3), &never).unwrap();
        assert_valid(&none, 2, 0, 6);
    }

    #[test]
    fn invalid_input_is_an_error() {
        let ok = neonatal_like_spec();
        let fails = |spec: &ModelSpec, s: &McmcSettings| {
            matches!(sample_gibbs(spec, s, &never), Err(SamplerError::Failed(_)))
        };
        let s = settings(1, 1, 1, 1);
        let mut fractional = ok.clone();
        fractional.terms[0].counts[0] = 1.5;
        assert!(fails(&fractional, &s));
        let mut negative = ok.clone();
        negative.terms[0].counts[0] = -1.0;
        assert!(fails(&negative, &s));
        let mut short = ok.clone();
        short.terms[0].counts.pop();
        assert!(fails(&short, &s));
        let mut bad_prior = ok.clone();
        bad_prior.p_prior[0] = 0.0;
        assert!(fails(&bad_prior, &s));
        let one_cause = ModelSpec {
            p_prior: vec![1.0],
            terms: vec![],
        };
        assert!(fails(&one_cause, &s));
        // A VA cause with deaths that no true cause can produce.
        let mut m = identity(3);
        m[2] = vec![0.5, 0.5, 0.0];
        let impossible = ModelSpec {
            p_prior: vec![1.0; 3],
            terms: vec![fixed_term(&[1.0, 1.0, 1.0], m)],
        };
        assert!(fails(&impossible, &s));
        assert!(fails(&ok, &settings(0, 1, 1, 1)));
        assert!(fails(&ok, &settings(1, 1, 1, 0)));
    }
}
