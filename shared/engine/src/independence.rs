//! Independence Metropolis–Hastings for the single-algorithm posterior of
//! calibration-model.md §7, in coordinates where the data's constraint is exact.
//!
//! With one algorithm the counts inform only `q = Mᵀp`, the distribution of VA causes: the
//! likelihood `Π_j q_j^{a_j}` is the kernel of `Dirichlet(a + 1)` in `q`. For a row-stochastic
//! `M`, `p ↦ Mᵀp` maps the simplex's plane to itself with Jacobian `|det M|`, so in `(q, θ)`
//!
//! ```text
//! π(q, θ) ∝ Dirichlet(q | a + 1) · Π_i Dirichlet(θ_i | α_i) · w(q, θ),
//! w = Π_i p_i^(β_i − 1) / |det M|   where p = M⁻ᵀq lies in the simplex, 0 elsewhere.
//! ```
//!
//! Drawing `q` from `Dirichlet(a + 1)` and the rows `θ_i` from their priors (for a fixed matrix,
//! only `q`) gives independent proposals whose importance weight is `w`, and Metropolis–Hastings
//! with acceptance `min(1, w'/w)` turns them into exact MCMC draws. It needs no tuning and no
//! gradient; the ridge along which `p` and `M` trade off (which forces NUTS into short steps) is
//! sampled directly. How well it works depends on how often `p` lands in the simplex and how much
//! `|det M|` varies there: with path correction's matrices a quarter to a third of proposals are
//! accepted, without it sometimes one in a thousand. [`plan`] measures that on a pilot run and
//! declines when NUTS would be cheaper; accepted plans keep every `steps`-th state so that
//! retained draws are nearly independent.

use std::sync::atomic::{AtomicBool, Ordering};

use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, RngExt, SeedableRng};
use rand_distr::{Open01, StandardNormal};

use crate::density::{exp_nonpos, ln_normal};
use crate::mcmc::{
    run_chains, CancelCheck, ChainDraws, McmcSettings, Sampler, SamplerError, Samples,
};
use crate::model::{Misclassification, ModelSpec};

/// Proposals in the pilot run that decides whether this sampler is worth using.
const PILOT_STEPS: usize = 2000;
/// Below this pilot acceptance rate NUTS is cheaper per effective draw.
pub const MIN_ACCEPTANCE: f64 = 0.1;
/// Metropolis steps per retained draw, times the acceptance rate: about this many accepted
/// moves separate two retained draws, so they are close to independent.
const ACCEPTED_MOVES_PER_DRAW: f64 = 5.0;
/// Proposals tried for a starting state inside the simplex.
const INIT_TRIES: usize = 100_000;
/// Steps between two polls of the cancel check.
const CANCEL_POLL_STEPS: usize = 4096;
/// The pilot's RNG stream, away from the chains' streams (0, 1, …).
const PILOT_STREAM: u64 = u64::MAX;

/// What the pilot run found: the sampler applies and keeps every `steps`-th state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    pub acceptance: f64,
    pub steps: usize,
}

/// `Gamma(shape, 1)` by Marsaglia and Tsang's method, with its constants computed once.
///
/// The same algorithm as `rand_distr::Gamma`; this copy inlines into the proposal loop, which
/// made a proposal (about 35 variates) 2.5 times cheaper than calling the general one.
#[derive(Debug, Clone, Copy)]
struct GammaDraw {
    d: f64,
    c: f64,
    /// `1 / shape` for shapes below 1, which are drawn as `Gamma(shape + 1) · U^(1/shape)`;
    /// 0 otherwise.
    inv_shape: f64,
}

impl GammaDraw {
    fn new(shape: f64) -> Option<Self> {
        if !(shape.is_finite() && shape > 0.0) {
            return None;
        }
        let boosted = if shape < 1.0 { shape + 1.0 } else { shape };
        let d = boosted - 1.0 / 3.0;
        Some(GammaDraw {
            d,
            c: 1.0 / (9.0 * d).sqrt(),
            inv_shape: if shape < 1.0 { 1.0 / shape } else { 0.0 },
        })
    }

    /// The exact acceptance test behind the squeeze. Out of line, so that the compiler does
    /// not evaluate its two logarithms on every draw.
    #[cold]
    #[inline(never)]
    fn slow_accept(&self, u: f64, x2: f64, v3: f64) -> bool {
        // u ∈ (0, 1) and v3 > 0 are positive normal numbers.
        ln_normal(u) < 0.5 * x2 + self.d * (1.0 - v3 + ln_normal(v3))
    }

    #[inline(always)]
    fn sample<R: Rng>(&self, rng: &mut R) -> f64 {
        let g = loop {
            let x: f64 = rng.sample(StandardNormal);
            let v = 1.0 + self.c * x;
            if v <= 0.0 {
                continue;
            }
            let v3 = v * v * v;
            let u: f64 = rng.sample(Open01);
            let x2 = x * x;
            // The squeeze accepts about 98 % of draws without a logarithm.
            if u < 1.0 - 0.0331 * x2 * x2 || self.slow_accept(u, x2, v3) {
                break self.d * v3;
            }
        };
        if self.inv_shape > 0.0 {
            // u ∈ (0, 1) is a positive normal number and the exponent is ≤ 0.
            let u: f64 = rng.sample(Open01);
            g * exp_nonpos(ln_normal(u) * self.inv_shape)
        } else {
            g
        }
    }
}

enum Rows {
    /// `m × m` gamma distributions for the rows `θ_i ~ Dirichlet(α_i)`, row-major.
    Dirichlet(Vec<GammaDraw>),
    /// The fixed matrix, row-major.
    Fixed(Vec<f64>),
}

/// The single-algorithm model in the form the proposals use.
struct Model {
    m: usize,
    /// Gamma distributions whose normalised draws are `q ~ Dirichlet(a + 1)`.
    q: Vec<GammaDraw>,
    rows: Rows,
    /// `β_i − 1` for the prior `p ~ Dirichlet(β)`; all ≥ 0, so `w` is bounded in `p`.
    beta_minus_one: Vec<f64>,
}

/// Working memory of one proposal.
#[derive(Clone)]
struct Proposal {
    /// `M`, row-major; overwritten by its LU factors.
    matrix: Vec<f64>,
    /// Row swaps of the LU factorisation.
    swaps: Vec<usize>,
    /// `q` on input, `p` after the solve.
    p: Vec<f64>,
    log_w: f64,
}

impl Proposal {
    fn new(m: usize) -> Self {
        Proposal {
            matrix: vec![0.0; m * m],
            swaps: vec![0; m],
            p: vec![0.0; m],
            log_w: f64::NEG_INFINITY,
        }
    }
}

impl Model {
    /// `None` when the spec is outside this sampler's reach: more than one term, a calibrated
    /// set smaller than the CSMF, a prior on `p` below 1 (the weight would be unbounded at
    /// the simplex's faces), or parameters that no gamma distribution takes.
    fn new(spec: &ModelSpec) -> Option<Model> {
        let [term] = spec.terms.as_slice() else {
            return None;
        };
        let m = spec.dim();
        let usable = m >= 2
            && term.counts.len() == m
            && term.calibrated.len() == m
            && term.calibrated.iter().all(|&c| c)
            && spec.p_prior.iter().all(|&b| b.is_finite() && b >= 1.0)
            && term.counts.iter().all(|&a| a.is_finite() && a >= 0.0);
        if !usable {
            return None;
        }
        let gamma = GammaDraw::new;
        let q = term
            .counts
            .iter()
            .map(|&a| gamma(a + 1.0))
            .collect::<Option<Vec<_>>>()?;
        let square = |mat: &Vec<Vec<f64>>| mat.len() == m && mat.iter().all(|r| r.len() == m);
        let rows = match &term.misclassification {
            Misclassification::Dirichlet(alpha) if square(alpha) => {
                let ok = alpha.iter().flatten().all(|&a| a.is_finite() && a > 0.0);
                if !ok {
                    return None;
                }
                Rows::Dirichlet(
                    alpha
                        .iter()
                        .flatten()
                        .map(|&a| gamma(a))
                        .collect::<Option<_>>()?,
                )
            }
            Misclassification::Fixed(matrix) if square(matrix) => {
                let ok = matrix.iter().flatten().all(|&x| x.is_finite() && x >= 0.0);
                if !ok {
                    return None;
                }
                Rows::Fixed(matrix.iter().flatten().copied().collect())
            }
            _ => return None,
        };
        Some(Model {
            m,
            q,
            rows,
            beta_minus_one: spec.p_prior.iter().map(|b| b - 1.0).collect(),
        })
    }

    /// Draws `(q, θ)`, solves `Mᵀp = q` and sets `out.log_w` (−∞ outside the simplex).
    fn propose<R: Rng + Clone>(&self, caller_rng: &mut R, out: &mut Proposal) {
        // A local copy of the generator's state stays in registers through the variates'
        // loops; through the reference it was loaded and stored around every draw.
        let mut local = caller_rng.clone();
        let rng = &mut local;
        // With the number of causes known at compile time the loops over rows and the
        // factorisation unroll (the same arithmetic, so the same bits).
        match self.m {
            2 => self.propose_with(2, rng, out),
            3 => self.propose_with(3, rng, out),
            4 => self.propose_with(4, rng, out),
            5 => self.propose_with(5, rng, out),
            6 => self.propose_with(6, rng, out),
            7 => self.propose_with(7, rng, out),
            8 => self.propose_with(8, rng, out),
            9 => self.propose_with(9, rng, out),
            10 => self.propose_with(10, rng, out),
            m => self.propose_with(m, rng, out),
        }
        *caller_rng = local;
    }

    /// [`Model::propose`] for `m == self.m`.
    #[inline(always)]
    fn propose_with<R: Rng>(&self, m: usize, rng: &mut R, out: &mut Proposal) {
        let (q, beta_minus_one) = (&self.q[..m], &self.beta_minus_one[..m]);
        let (matrix, swaps, p) = (
            &mut out.matrix[..m * m],
            &mut out.swaps[..m],
            &mut out.p[..m],
        );
        let mut total = 0.0;
        for (p, g) in p.iter_mut().zip(q) {
            *p = g.sample(rng);
            total += *p;
        }
        p.iter_mut().for_each(|x| *x /= total);
        match &self.rows {
            Rows::Dirichlet(gammas) => {
                for (row, row_gammas) in matrix.chunks_exact_mut(m).zip(gammas.chunks_exact(m)) {
                    let mut sum = 0.0;
                    for (x, g) in row.iter_mut().zip(row_gammas) {
                        *x = g.sample(rng);
                        sum += *x;
                    }
                    let inv = 1.0 / sum;
                    row.iter_mut().for_each(|x| *x *= inv);
                }
            }
            Rows::Fixed(fixed) => matrix.copy_from_slice(fixed),
        }
        out.log_w = match solve_transposed(matrix, swaps, p, m) {
            Some(log_det) if p.iter().all(|&x| x >= 0.0) => {
                let mut log_w = -log_det;
                for (&b, &x) in beta_minus_one.iter().zip(p.iter()) {
                    if b != 0.0 {
                        log_w += b * x.ln();
                    }
                }
                if log_w.is_nan() {
                    f64::NEG_INFINITY
                } else {
                    log_w
                }
            }
            _ => f64::NEG_INFINITY,
        };
    }
}

/// Solves `Mᵀ x = b` by LU with partial pivoting of `M` (`m × m`, row-major, overwritten by
/// its factors; `swaps` is scratch; `b` becomes `x`) and returns `log |det M|`, or `None` for
/// a singular or non-finite system. Factorising `M` rather than `Mᵀ` lets the proposal write
/// its rows in place.
#[inline(always)]
fn solve_transposed(a: &mut [f64], swaps: &mut [usize], b: &mut [f64], m: usize) -> Option<f64> {
    // P M = L U, with P the row swaps in order.
    let mut det = 1.0f64;
    let mut log_det = 0.0f64;
    for k in 0..m {
        let mut pivot = k;
        for r in k + 1..m {
            if a[r * m + k].abs() > a[pivot * m + k].abs() {
                pivot = r;
            }
        }
        let diag = a[pivot * m + k];
        if !(diag.abs() > 0.0 && diag.is_finite()) {
            return None;
        }
        swaps[k] = pivot;
        if pivot != k {
            for j in 0..m {
                a.swap(pivot * m + j, k * m + j);
            }
        }
        det *= diag.abs();
        // Keep the running product away from underflow on large, near-singular systems.
        if det < 1e-200 {
            log_det += det.ln();
            det = 1.0;
        }
        let (upper, lower) = a.split_at_mut((k + 1) * m);
        let pivot_row = &upper[k * m..];
        for row in lower.chunks_exact_mut(m) {
            let f = row[k] / diag;
            row[k] = f;
            if f != 0.0 {
                for (x, &u) in row[k + 1..].iter_mut().zip(&pivot_row[k + 1..]) {
                    *x -= f * u;
                }
            }
        }
    }
    // Mᵀ = Uᵀ Lᵀ P: solve Uᵀ w = b (forward), then Lᵀ z = w (backward, unit diagonal),
    // then x = Pᵀ z.
    for k in 0..m {
        let mut x = b[k];
        for j in 0..k {
            x -= a[j * m + k] * b[j];
        }
        b[k] = x / a[k * m + k];
    }
    for k in (0..m).rev() {
        let mut x = b[k];
        for j in k + 1..m {
            x -= a[j * m + k] * b[j];
        }
        b[k] = x;
    }
    for k in (0..m).rev() {
        b.swap(k, swaps[k]);
    }
    if b.iter().all(|x| x.is_finite()) {
        Some(log_det + det.ln())
    } else {
        None
    }
}

/// The random stream of a chain (or the pilot). Xoshiro256++ rather than the other samplers'
/// ChaCha8: a proposal is some 35 gamma variates and little else, and ChaCha8's generator was a
/// third of the run time. Its `seed_from_u64` expands the seed with SplitMix64, so distinct
/// `(seed, stream)` pairs give unrelated states.
fn stream_rng(seed: u64, stream: u64) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// One Metropolis–Hastings step: propose into `next`, and swap it with `current` if accepted.
fn step<R: Rng + Clone>(
    model: &Model,
    rng: &mut R,
    current: &mut Proposal,
    next: &mut Proposal,
) -> bool {
    model.propose(rng, next);
    if next.log_w == f64::NEG_INFINITY {
        return false;
    }
    let log_ratio = next.log_w - current.log_w;
    let accept = log_ratio >= 0.0 || rng.random::<f64>().ln() < log_ratio;
    if accept {
        std::mem::swap(current, next);
    }
    accept
}

/// A starting state inside the simplex: the first such proposal.
fn start<R: Rng + Clone>(model: &Model, rng: &mut R) -> Option<Proposal> {
    let mut state = Proposal::new(model.m);
    (0..INIT_TRIES).any(|_| {
        model.propose(rng, &mut state);
        state.log_w > f64::NEG_INFINITY
    });
    (state.log_w > f64::NEG_INFINITY).then_some(state)
}

/// Runs the pilot for `spec` and returns the plan, or `None` when this sampler does not apply
/// or would mix too slowly (acceptance below [`MIN_ACCEPTANCE`]).
pub fn plan(spec: &ModelSpec, seed: u64) -> Option<Plan> {
    let model = Model::new(spec)?;
    let mut rng = stream_rng(seed, PILOT_STREAM);
    let mut current = start(&model, &mut rng)?;
    let mut next = Proposal::new(model.m);
    let accepted = (0..PILOT_STEPS)
        .filter(|_| step(&model, &mut rng, &mut current, &mut next))
        .count();
    let acceptance = accepted as f64 / PILOT_STEPS as f64;
    (acceptance >= MIN_ACCEPTANCE).then(|| Plan {
        acceptance,
        steps: (ACCEPTED_MOVES_PER_DRAW / acceptance).ceil() as usize,
    })
}

/// The independence sampler with the plan its pilot found, as a [`Sampler`].
#[derive(Debug, Clone, Copy)]
pub struct IndependenceSampler(pub Plan);

impl Sampler for IndependenceSampler {
    fn name(&self) -> &'static str {
        "independence"
    }

    fn sample(
        &self,
        spec: &ModelSpec,
        settings: &McmcSettings,
        cancel: CancelCheck,
    ) -> Result<Samples, SamplerError> {
        sample_independence(spec, settings, self.0, cancel)
    }
}

/// Draws `p` from the posterior of `spec` with `plan.steps × settings.thin` Metropolis steps
/// per retained draw, after `settings.warmup_per_chain` burn-in steps (the proposals come
/// from close to the target, so a few accepted moves reach it).
/// Chain `c` uses the random stream `c` of `settings.seed`, so the draws do not depend on the
/// thread count.
pub fn sample_independence(
    spec: &ModelSpec,
    settings: &McmcSettings,
    plan: Plan,
    cancel: CancelCheck,
) -> Result<Samples, SamplerError> {
    let model = Model::new(spec).ok_or_else(|| {
        SamplerError::Failed("the independence sampler needs a single-algorithm model".into())
    })?;
    let steps_per_draw = plan
        .steps
        .max(1)
        .checked_mul(settings.thin.max(1))
        .ok_or_else(|| SamplerError::Failed("steps per draw overflow".into()))?;
    let burn_in = settings.warmup_per_chain;
    run_chains(settings, cancel, |chain, stop| {
        run_chain(
            &model,
            settings,
            chain,
            steps_per_draw,
            burn_in,
            cancel,
            stop,
        )
    })
    .map(|chains| Samples { chains })
}

fn run_chain(
    model: &Model,
    settings: &McmcSettings,
    chain: usize,
    steps_per_draw: usize,
    burn_in: usize,
    cancel: CancelCheck,
    stop: &AtomicBool,
) -> Result<ChainDraws, SamplerError> {
    let mut rng = stream_rng(settings.seed, chain as u64);
    let mut current = start(model, &mut rng).ok_or_else(|| {
        SamplerError::Failed(format!(
            "chain {chain}: no proposal inside the simplex in {INIT_TRIES} tries"
        ))
    })?;
    let mut next = Proposal::new(model.m);
    let mut draws = Vec::with_capacity(settings.draws_per_chain);
    let mut since_poll = 0;
    let mut poll = |n: usize| -> Result<(), SamplerError> {
        since_poll += n;
        if since_poll >= CANCEL_POLL_STEPS {
            since_poll = 0;
            if stop.load(Ordering::Relaxed) || cancel() {
                return Err(SamplerError::Cancelled);
            }
        }
        Ok(())
    };
    for _ in 0..burn_in {
        step(model, &mut rng, &mut current, &mut next);
        poll(1)?;
    }
    for _ in 0..settings.draws_per_chain {
        for _ in 0..steps_per_draw {
            step(model, &mut rng, &mut current, &mut next);
        }
        poll(steps_per_draw)?;
        draws.push(current.p.clone());
    }
    Ok(ChainDraws {
        draws,
        divergences: 0,
        max_depth_hits: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AlgorithmTerm;

    fn never() -> bool {
        false
    }

    fn settings(
        chains: usize,
        warmup: usize,
        draws: usize,
        threads: Option<usize>,
    ) -> McmcSettings {
        McmcSettings {
            chains,
            warmup_per_chain: warmup,
            draws_per_chain: draws,
            thin: 1,
            seed: 7,
            target_accept: 0.9,
            max_depth: 10,
            threads,
        }
    }

    fn term(counts: Vec<f64>, misclassification: Misclassification) -> AlgorithmTerm {
        AlgorithmTerm {
            calibrated: vec![true; counts.len()],
            counts,
            misclassification,
        }
    }

    fn dirichlet_spec() -> ModelSpec {
        let alpha = vec![
            vec![30.0, 3.0, 2.0, 1.5],
            vec![2.0, 25.0, 4.0, 0.8],
            vec![1.0, 5.0, 28.0, 3.0],
            vec![2.5, 1.0, 2.0, 40.0],
        ];
        ModelSpec {
            p_prior: vec![1.0; 4],
            terms: vec![term(
                vec![60.0, 150.0, 240.0, 90.0],
                Misclassification::Dirichlet(alpha),
            )],
        }
    }

    fn means(samples: &Samples) -> Vec<f64> {
        let draws: Vec<&Vec<f64>> = samples.chains.iter().flat_map(|c| &c.draws).collect();
        (0..draws[0].len())
            .map(|j| draws.iter().map(|d| d[j]).sum::<f64>() / draws.len() as f64)
            .collect()
    }

    #[test]
    fn solve_returns_the_solution_and_log_determinant() {
        // Mᵀ x = b for M = [[0, 2, 1], [1, 1, 3], [4, 0, 1]] (det 18, pivoting needed):
        // Mᵀ = [[0, 1, 4], [2, 1, 0], [1, 3, 1]] and x = [1, 2, 3] give b = [14, 4, 10].
        let mut a = vec![0.0, 2.0, 1.0, 1.0, 1.0, 3.0, 4.0, 0.0, 1.0];
        let mut b = vec![14.0, 4.0, 10.0];
        let log_det = solve_transposed(&mut a, &mut [0; 3], &mut b, 3).unwrap();
        assert!((log_det - 18f64.ln()).abs() < 1e-12, "{log_det}");
        for (x, want) in b.iter().zip([1.0, 2.0, 3.0]) {
            assert!((x - want).abs() < 1e-12, "{b:?}");
        }
        let mut singular = vec![1.0, 2.0, 2.0, 4.0];
        assert_eq!(
            solve_transposed(&mut singular, &mut [0; 2], &mut [1.0, 2.0], 2),
            None
        );
    }

    #[test]
    fn identity_fixed_term_gives_the_conjugate_dirichlet() {
        // M = I: the posterior is Dirichlet(β + a) exactly; β > 1 exercises the p weight.
        let (beta, counts) = ([1.0, 2.5, 1.0], [12.0, 30.0, 5.0]);
        let spec = ModelSpec {
            p_prior: beta.to_vec(),
            terms: vec![term(
                counts.to_vec(),
                Misclassification::Fixed(vec![
                    vec![1.0, 0.0, 0.0],
                    vec![0.0, 1.0, 0.0],
                    vec![0.0, 0.0, 1.0],
                ]),
            )],
        };
        let plan = plan(&spec, 1).unwrap();
        let samples =
            sample_independence(&spec, &settings(4, 200, 5000, None), plan, &never).unwrap();
        let shape: Vec<f64> = beta.iter().zip(&counts).map(|(b, a)| b + a).collect();
        let total: f64 = shape.iter().sum();
        let n = 20_000.0;
        for (mean, s) in means(&samples).iter().zip(&shape) {
            let expected = s / total;
            let sd = (expected * (1.0 - expected) / (total + 1.0)).sqrt();
            assert!(
                (mean - expected).abs() < 4.0 * sd / f64::sqrt(n / 2.0),
                "{mean} vs {expected}"
            );
        }
    }

    #[test]
    fn draws_do_not_depend_on_the_thread_count() {
        let spec = dirichlet_spec();
        let plan = plan(&spec, 3).unwrap();
        let one = sample_independence(&spec, &settings(3, 50, 100, Some(1)), plan, &never);
        let many = sample_independence(&spec, &settings(3, 50, 100, Some(3)), plan, &never);
        assert_eq!(one.unwrap(), many.unwrap());
    }

    #[test]
    fn retained_draws_are_close_to_independent() {
        let spec = dirichlet_spec();
        let plan = plan(&spec, 3).unwrap();
        assert!(plan.acceptance > 0.1, "{plan:?}");
        let samples =
            sample_independence(&spec, &settings(4, 200, 1000, None), plan, &never).unwrap();
        let ess = crate::diagnostics::diagnose_samples(&samples).min_ess_bulk;
        assert!(ess > 0.85 * 4000.0, "min bulk ESS {ess} of 4000 draws");
    }

    #[test]
    fn pilot_declines_what_it_cannot_sample() {
        let mut two_terms = dirichlet_spec();
        two_terms.terms.push(two_terms.terms[0].clone());
        assert_eq!(plan(&two_terms, 1), None);
        let mut shrunk_prior = dirichlet_spec();
        shrunk_prior.p_prior[0] = 0.5;
        assert_eq!(plan(&shrunk_prior, 1), None);
        let mut partly_calibrated = dirichlet_spec();
        partly_calibrated.terms[0].calibrated[1] = false;
        assert_eq!(plan(&partly_calibrated, 1), None);
        // Rows far from the identity: p = M⁻ᵀq almost never lands in the simplex.
        let mut scrambled = dirichlet_spec();
        scrambled.terms[0].misclassification = Misclassification::Dirichlet(vec![vec![5.0; 4]; 4]);
        assert_eq!(plan(&scrambled, 1), None);
    }

    #[test]
    fn cancel_stops_the_run() {
        let spec = dirichlet_spec();
        let plan = plan(&spec, 3).unwrap();
        let cancel = || true;
        let result = sample_independence(&spec, &settings(2, 10, 100_000, None), plan, &cancel);
        assert_eq!(result, Err(SamplerError::Cancelled));
    }
}
