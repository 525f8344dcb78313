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

use std::sync::atomic::{AtomicBool, Ordering};

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

use crate::density::{exp_nonpos, ln_normal, Posterior};
use crate::mcmc::{run_chains, CancelCheck, ChainDraws, McmcSettings, SamplerError, Samples};
use crate::model::ModelSpec;

/// Iterations between two calls of the cancel check.
const CANCEL_POLL: usize = 50;
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
    let mut restored = vec![0.0; order.len()];
    for draw in draws.iter_mut().flat_map(|c| c.draws.iter_mut()) {
        for (k, &cause) in order.iter().enumerate() {
            restored[cause] = draw[k];
        }
        draw.copy_from_slice(&restored);
    }
    Ok((Samples { chains: draws }, stats))
}

/// The order in which the causes enter Stan's stick-breaking coordinates: ascending in their
/// deaths over all terms, so the largest causes come last (ties keep their order). The
/// transform is not symmetric: each stick is a share of what the earlier ones left, so a large
/// cause early makes every later coordinate move with it. Over 18 fits and 8 seeds each this
/// order gave 1.17 times the min bulk ESS (geometric mean), and 1.24–1.58 times on the child
/// ensembles (BENCHMARKS.md, "Causes in ascending order for NUTS").
fn stick_order(spec: &ModelSpec) -> Vec<usize> {
    let deaths = |j: usize| -> f64 { spec.terms.iter().map(|t| t.counts[j]).sum() };
    let mut order: Vec<usize> = (0..spec.dim()).collect();
    order.sort_by(|&a, &b| deaths(a).total_cmp(&deaths(b)));
    order
}

/// `Ok(None)`: stopped because another chain failed or was cancelled (`stop` is set).
fn run_chain(
    plan: &Plan,
    posterior: &Posterior,
    c: usize,
    stop: &AtomicBool,
) -> Result<Option<(ChainDraws, ChainStats)>, SamplerError> {
    let settings = plan.settings;
    let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
    rng.set_stream(c as u64);

    let dim = posterior.dim();
    let d = posterior.num_causes();
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
        if it == warmup {
            nuts.max_depth = max_depth;
        }
        let transition = nuts.transition(&mut state, &mut rng);
        if it < warmup {
            stats.warmup_leapfrog_steps += transition.leapfrog_steps;
            stats.warmup_max_depth = stats.warmup_max_depth.max(transition.depth);
            nuts.step_size = adapt.step_size.learn(transition.accept_stat);
            if adapt.metric.learn(&state.q, &mut nuts.inv_metric) {
                // A new metric: restart the step-size search from a sensible value (as Stan).
                nuts.step_size = nuts.find_reasonable_step_size(&state, nuts.step_size, &mut rng);
                adapt.step_size.restart(nuts.step_size);
            }
            if it + 1 == warmup {
                nuts.step_size = adapt.step_size.final_step_size();
            }
            continue;
        }
        out.divergences += usize::from(transition.divergent);
        out.max_depth_hits += usize::from(transition.depth >= max_depth);
        stats.iterations += 1;
        stats.leapfrog_steps += transition.leapfrog_steps;
        stats.max_depth = stats.max_depth.max(transition.depth);
        stats.step_size = nuts.step_size;
        if (it - warmup).is_multiple_of(settings.thin) {
            let mut p = vec![0.0; d];
            posterior.p_from_position(&state.q, &mut p);
            out.draws.push(p);
        }
    }
    Ok(Some((out, stats)))
}

/// A point in phase space: position, momentum, gradient and log density at the position.
#[derive(Debug, Clone)]
struct Point {
    q: Vec<f64>,
    p: Vec<f64>,
    g: Vec<f64>,
    logp: f64,
}

impl Point {
    fn new(dim: usize) -> Self {
        Point {
            q: vec![0.0; dim],
            p: vec![0.0; dim],
            g: vec![0.0; dim],
            logp: f64::NEG_INFINITY,
        }
    }

    fn copy_from(&mut self, other: &Point) {
        self.copy_state_from(other);
        self.p.copy_from_slice(&other.p);
    }

    /// Copies all but the momentum, which a proposal does not need.
    fn copy_state_from(&mut self, other: &Point) {
        self.q.copy_from_slice(&other.q);
        self.g.copy_from_slice(&other.g);
        self.logp = other.logp;
    }
}

/// Buffers of one level of the tree recursion (the momenta and sums of its two halves).
#[derive(Debug, Clone, Default)]
struct Level {
    p_init_end: Vec<f64>,
    p_sharp_init_end: Vec<f64>,
    rho_init: Vec<f64>,
    p_final_beg: Vec<f64>,
    p_sharp_final_beg: Vec<f64>,
    rho_final: Vec<f64>,
    propose_final: Option<Point>,
}

impl Level {
    fn new(dim: usize) -> Self {
        Level {
            p_init_end: vec![0.0; dim],
            p_sharp_init_end: vec![0.0; dim],
            rho_init: vec![0.0; dim],
            p_final_beg: vec![0.0; dim],
            p_sharp_final_beg: vec![0.0; dim],
            rho_final: vec![0.0; dim],
            propose_final: Some(Point::new(dim)),
        }
    }
}

/// Ends of the whole trajectory and their momenta, for [`Nuts::transition`].
struct Ends {
    fwd: Point,
    bck: Point,
    sample: Point,
    propose: Point,
    p_fwd_fwd: Vec<f64>,
    p_sharp_fwd_fwd: Vec<f64>,
    p_fwd_bck: Vec<f64>,
    p_sharp_fwd_bck: Vec<f64>,
    p_bck_fwd: Vec<f64>,
    p_sharp_bck_fwd: Vec<f64>,
    p_bck_bck: Vec<f64>,
    p_sharp_bck_bck: Vec<f64>,
    rho: Vec<f64>,
    rho_fwd: Vec<f64>,
    rho_bck: Vec<f64>,
}

impl Ends {
    fn new(dim: usize) -> Self {
        let v = || vec![0.0; dim];
        Ends {
            fwd: Point::new(dim),
            bck: Point::new(dim),
            sample: Point::new(dim),
            propose: Point::new(dim),
            p_fwd_fwd: v(),
            p_sharp_fwd_fwd: v(),
            p_fwd_bck: v(),
            p_sharp_fwd_bck: v(),
            p_bck_fwd: v(),
            p_sharp_bck_fwd: v(),
            p_bck_bck: v(),
            p_sharp_bck_bck: v(),
            rho: v(),
            rho_fwd: v(),
            rho_bck: v(),
        }
    }
}

/// What one transition did.
#[derive(Debug, Clone, Copy)]
struct Transition {
    accept_stat: f64,
    leapfrog_steps: u64,
    depth: usize,
    divergent: bool,
}

/// The no-U-turn sampler with a diagonal metric for one chain.
struct Nuts<'a> {
    posterior: &'a Posterior,
    /// Diagonal of the inverse metric (the estimated posterior variances).
    inv_metric: Vec<f64>,
    step_size: f64,
    max_depth: usize,
    /// The point being integrated.
    z: Point,
    levels: Vec<Level>,
    ends: Option<Box<Ends>>,
    // Per-transition accumulators.
    h0: f64,
    leapfrog_steps: u64,
    sum_metro_prob: f64,
    divergent: bool,
}

#[inline]
fn log_sum_exp(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    if b == f64::NEG_INFINITY {
        return a;
    }
    // One of the two terms is exp(0) = 1, so 1 + exp(−|a − b|) lies in [1, 2].
    let m = a.max(b);
    m + ln_normal(1.0 + exp_nonpos(-(a - b).abs()))
}

/// Where a new leaf's momentum goes: its sharp momentum `p♯ = M⁻¹p` as both ends of a
/// one-point sub-tree, the sub-tree's momentum sum, and its end momenta.
struct LeafOut<'b> {
    p_sharp_beg: &'b mut [f64],
    p_sharp_end: &'b mut [f64],
    rho: &'b mut [f64],
    p_beg: &'b mut [f64],
    p_end: &'b mut [f64],
}

/// Records the leaf with momentum `p` in one pass and returns `p·p♯` (twice the kinetic
/// energy). The tree's bookkeeping per leapfrog step is a handful of passes over the momenta;
/// fused, and with 4-wide vectors where the CPU has them, it costs a fraction as much.
fn leaf(p: &[f64], inv_metric: &[f64], out: LeafOut) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, as just checked.
        return unsafe { leaf_avx2(p, inv_metric, out) };
    }
    leaf_impl(p, inv_metric, out)
}

/// [`leaf_impl`] in 4-wide vectors: the same operations lane by lane, so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn leaf_avx2(p: &[f64], inv_metric: &[f64], mut out: LeafOut) -> f64 {
    use std::arch::x86_64::*;
    let n = p.len();
    assert!(
        inv_metric.len() >= n
            && out.p_sharp_beg.len() >= n
            && out.p_sharp_end.len() >= n
            && out.rho.len() >= n
            && out.p_beg.len() >= n
            && out.p_end.len() >= n,
        "buffers shorter than the momentum"
    );
    let whole = n - n % 4;
    let mut acc = _mm256_setzero_pd();
    for at in (0..whole).step_by(4) {
        // SAFETY: at + 4 <= whole <= n, and every buffer holds at least n elements.
        unsafe {
            let pv = _mm256_loadu_pd(p.as_ptr().add(at));
            let sharp = _mm256_mul_pd(pv, _mm256_loadu_pd(inv_metric.as_ptr().add(at)));
            _mm256_storeu_pd(out.p_sharp_beg.as_mut_ptr().add(at), sharp);
            _mm256_storeu_pd(out.p_sharp_end.as_mut_ptr().add(at), sharp);
            let r = out.rho.as_mut_ptr().add(at);
            _mm256_storeu_pd(r, _mm256_add_pd(_mm256_loadu_pd(r), pv));
            _mm256_storeu_pd(out.p_beg.as_mut_ptr().add(at), pv);
            _mm256_storeu_pd(out.p_end.as_mut_ptr().add(at), pv);
            acc = _mm256_add_pd(acc, _mm256_mul_pd(pv, sharp));
        }
    }
    let mut lanes = [0.0; 4];
    // SAFETY: `lanes` holds four doubles.
    unsafe { _mm256_storeu_pd(lanes.as_mut_ptr(), acc) };
    let rest = leaf_rest(whole, p, inv_metric, &mut out);
    (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]) + rest
}

/// The leaf's elements from `from` on, one at a time: the remainder after the whole groups of
/// four. Returns their part of `p·p♯`.
#[inline(always)]
fn leaf_rest(from: usize, p: &[f64], inv_metric: &[f64], out: &mut LeafOut) -> f64 {
    let mut rest = -0.0;
    for i in from..p.len() {
        let sharp = p[i] * inv_metric[i];
        out.p_sharp_beg[i] = sharp;
        out.p_sharp_end[i] = sharp;
        out.rho[i] += p[i];
        out.p_beg[i] = p[i];
        out.p_end[i] = p[i];
        rest += p[i] * sharp;
    }
    rest
}

/// Four elements of `v` from `at`.
#[inline(always)]
fn four(v: &[f64], at: usize) -> &[f64; 4] {
    v[at..at + 4].try_into().expect("four elements")
}

/// Four elements of `v` from `at`, mutably.
#[inline(always)]
fn four_mut(v: &mut [f64], at: usize) -> &mut [f64; 4] {
    (&mut v[at..at + 4]).try_into().expect("four elements")
}

/// The sums run in four lanes (element `i` in lane `i mod 4`) and then
/// `(l0 + l1) + (l2 + l3) + rest`, as [`crate::density::dot`] does, so every path gives the same bits.
#[inline(always)]
fn leaf_impl(p: &[f64], inv_metric: &[f64], mut out: LeafOut) -> f64 {
    let n = p.len();
    let mut acc = [0.0; 4];
    let whole = n - n % 4;
    for at in (0..whole).step_by(4) {
        let (pv, m) = (four(p, at), four(inv_metric, at));
        let (sb, se, r, pb, pe) = (
            four_mut(out.p_sharp_beg, at),
            four_mut(out.p_sharp_end, at),
            four_mut(out.rho, at),
            four_mut(out.p_beg, at),
            four_mut(out.p_end, at),
        );
        let mut sharp = [0.0; 4];
        for l in 0..4 {
            sharp[l] = pv[l] * m[l];
        }
        sb.copy_from_slice(&sharp);
        se.copy_from_slice(&sharp);
        pb.copy_from_slice(pv);
        pe.copy_from_slice(pv);
        for l in 0..4 {
            r[l] += pv[l];
        }
        for l in 0..4 {
            acc[l] += pv[l] * sharp[l];
        }
    }
    let rest = leaf_rest(whole, p, inv_metric, &mut out);
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + rest
}

/// The two halves of a sub-tree: their momentum sums, the momenta at the seam, and the sharp
/// momenta at the sub-tree's ends and at the seam.
struct Halves<'b> {
    rho_init: &'b [f64],
    rho_final: &'b [f64],
    p_init_end: &'b [f64],
    p_final_beg: &'b [f64],
    p_sharp_beg: &'b [f64],
    p_sharp_init_end: &'b [f64],
    p_sharp_final_beg: &'b [f64],
    p_sharp_end: &'b [f64],
}

/// Adds the sub-tree's momentum sum to `rho` and returns the six dot products of Stan's three
/// no-U-turn checks (across the sub-tree, and across each half extended by the nearest point of
/// the other), all positive when the trajectory goes on. One pass computes all six; the checks
/// have no side effects, so evaluating all of them gives the same answer as stopping at the
/// first failure.
fn merge(h: &Halves, rho: &mut [f64]) -> [f64; 6] {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, as just checked.
        return unsafe { merge_avx2(h, rho) };
    }
    merge_impl(h, rho)
}

/// [`merge_impl`] in 4-wide vectors: the same operations lane by lane, so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn merge_avx2(h: &Halves, rho: &mut [f64]) -> [f64; 6] {
    use std::arch::x86_64::*;
    let n = rho.len();
    assert!(
        [
            h.rho_init,
            h.rho_final,
            h.p_init_end,
            h.p_final_beg,
            h.p_sharp_beg,
            h.p_sharp_init_end,
            h.p_sharp_final_beg,
            h.p_sharp_end,
        ]
        .iter()
        .all(|v| v.len() >= n),
        "buffers shorter than the momentum"
    );
    let whole_len = n - n % 4;
    let mut acc = [_mm256_setzero_pd(); 6];
    for at in (0..whole_len).step_by(4) {
        // SAFETY: at + 4 <= whole_len <= n, and every buffer holds at least n elements.
        unsafe {
            let load = |v: &[f64]| _mm256_loadu_pd(v.as_ptr().add(at));
            let (ri, rf) = (load(h.rho_init), load(h.rho_final));
            let whole = _mm256_add_pd(ri, rf);
            let init = _mm256_add_pd(ri, load(h.p_final_beg));
            let fin = _mm256_add_pd(rf, load(h.p_init_end));
            let out = rho.as_mut_ptr().add(at);
            _mm256_storeu_pd(out, _mm256_add_pd(_mm256_loadu_pd(out), whole));
            let (sb, se) = (load(h.p_sharp_beg), load(h.p_sharp_end));
            let (sie, sfb) = (load(h.p_sharp_init_end), load(h.p_sharp_final_beg));
            acc[0] = _mm256_add_pd(acc[0], _mm256_mul_pd(se, whole));
            acc[1] = _mm256_add_pd(acc[1], _mm256_mul_pd(sb, whole));
            acc[2] = _mm256_add_pd(acc[2], _mm256_mul_pd(sfb, init));
            acc[3] = _mm256_add_pd(acc[3], _mm256_mul_pd(sb, init));
            acc[4] = _mm256_add_pd(acc[4], _mm256_mul_pd(se, fin));
            acc[5] = _mm256_add_pd(acc[5], _mm256_mul_pd(sie, fin));
        }
    }
    let mut lanes = [[0.0; 4]; 6];
    for (lane, acc) in lanes.iter_mut().zip(acc) {
        // SAFETY: `lane` holds four doubles.
        unsafe { _mm256_storeu_pd(lane.as_mut_ptr(), acc) };
    }
    let mut rest = [-0.0; 6];
    merge_rest(h, rho, whole_len, &mut rest);
    std::array::from_fn(|k| (lanes[k][0] + lanes[k][1]) + (lanes[k][2] + lanes[k][3]) + rest[k])
}

/// The elements from `from` on, one at a time: the remainder after the whole groups of four.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // nine slices indexed in step
fn merge_rest(h: &Halves, rho: &mut [f64], from: usize, rest: &mut [f64; 6]) {
    for i in from..rho.len() {
        let whole = h.rho_init[i] + h.rho_final[i];
        let init = h.rho_init[i] + h.p_final_beg[i];
        let fin = h.rho_final[i] + h.p_init_end[i];
        rho[i] += whole;
        rest[0] += h.p_sharp_end[i] * whole;
        rest[1] += h.p_sharp_beg[i] * whole;
        rest[2] += h.p_sharp_final_beg[i] * init;
        rest[3] += h.p_sharp_beg[i] * init;
        rest[4] += h.p_sharp_end[i] * fin;
        rest[5] += h.p_sharp_init_end[i] * fin;
    }
}

/// Lanes and final sums as in [`leaf_impl`].
#[inline(always)]
fn merge_impl(h: &Halves, rho: &mut [f64]) -> [f64; 6] {
    let n = rho.len();
    // Per check (whole sub-tree, initial half extended, final half extended): the sum's dot
    // with the sharp momentum at its end and at its start.
    let mut acc = [[0.0; 4]; 6];
    let whole_len = n - n % 4;
    for at in (0..whole_len).step_by(4) {
        let (ri, rf) = (four(h.rho_init, at), four(h.rho_final, at));
        let (pie, pfb) = (four(h.p_init_end, at), four(h.p_final_beg, at));
        let (sb, se) = (four(h.p_sharp_beg, at), four(h.p_sharp_end, at));
        let (sie, sfb) = (four(h.p_sharp_init_end, at), four(h.p_sharp_final_beg, at));
        let out = four_mut(rho, at);
        let (mut whole, mut init, mut fin) = ([0.0; 4], [0.0; 4], [0.0; 4]);
        for l in 0..4 {
            whole[l] = ri[l] + rf[l];
        }
        for l in 0..4 {
            init[l] = ri[l] + pfb[l];
        }
        for l in 0..4 {
            fin[l] = rf[l] + pie[l];
        }
        for l in 0..4 {
            out[l] += whole[l];
        }
        for (acc, (sharp, sum)) in acc.iter_mut().zip([
            (se, &whole),
            (sb, &whole),
            (sfb, &init),
            (sb, &init),
            (se, &fin),
            (sie, &fin),
        ]) {
            for l in 0..4 {
                acc[l] += sharp[l] * sum[l];
            }
        }
    }
    let mut rest = [-0.0; 6];
    merge_rest(h, rho, whole_len, &mut rest);
    std::array::from_fn(|k| (acc[k][0] + acc[k][1]) + (acc[k][2] + acc[k][3]) + rest[k])
}

/// The first half of a leapfrog step: a half step of the momentum `p` along the gradient `g`,
/// then a full step `eps` of the position `q`.
fn kick_and_drift(q: &mut [f64], p: &mut [f64], g: &[f64], inv_metric: &[f64], eps: f64) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, as just checked.
        return unsafe { kick_and_drift_avx2(q, p, g, inv_metric, eps) };
    }
    kick_and_drift_impl(q, p, g, inv_metric, eps)
}

/// The same code with 4-wide vectors; elementwise, so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn kick_and_drift_avx2(
    q: &mut [f64],
    p: &mut [f64],
    g: &[f64],
    inv_metric: &[f64],
    eps: f64,
) {
    kick_and_drift_impl(q, p, g, inv_metric, eps)
}

#[inline(always)]
fn kick_and_drift_impl(q: &mut [f64], p: &mut [f64], g: &[f64], inv_metric: &[f64], eps: f64) {
    let half = 0.5 * eps;
    let n = q.len();
    let (p, g, m) = (&mut p[..n], &g[..n], &inv_metric[..n]);
    for i in 0..n {
        p[i] += half * g[i];
        q[i] += eps * m[i] * p[i];
    }
}

/// A half step `half` of the momentum `p` along the gradient `g`.
fn kick(p: &mut [f64], g: &[f64], half: f64) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, as just checked.
        return unsafe { kick_avx2(p, g, half) };
    }
    kick_impl(p, g, half)
}

/// The same code with 4-wide vectors; elementwise, so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn kick_avx2(p: &mut [f64], g: &[f64], half: f64) {
    kick_impl(p, g, half)
}

#[inline(always)]
fn kick_impl(p: &mut [f64], g: &[f64], half: f64) {
    let g = &g[..p.len()];
    for (p, g) in p.iter_mut().zip(g) {
        *p += half * g;
    }
}

impl<'a> Nuts<'a> {
    fn new(posterior: &'a Posterior, dim: usize, max_depth: usize) -> Self {
        Nuts {
            posterior,
            inv_metric: vec![1.0; dim],
            step_size: 1.0,
            max_depth,
            z: Point::new(dim),
            levels: (0..max_depth).map(|_| Level::new(dim)).collect(),
            ends: Some(Box::new(Ends::new(dim))),
            h0: 0.0,
            leapfrog_steps: 0,
            sum_metro_prob: 0.0,
            divergent: false,
        }
    }

    fn kinetic(&self, p: &[f64]) -> f64 {
        let n = p.len();
        let mut acc = [0.0; 4];
        let mut i = 0;
        while i + 4 <= n {
            for l in 0..4 {
                acc[l] += p[i + l] * p[i + l] * self.inv_metric[i + l];
            }
            i += 4;
        }
        let rest: f64 = (i..n).map(|i| p[i] * p[i] * self.inv_metric[i]).sum();
        0.5 * ((acc[0] + acc[1]) + (acc[2] + acc[3]) + rest)
    }

    /// Hamiltonian of `z`; `+∞` where the density is not finite.
    fn hamiltonian(&self, z: &Point) -> f64 {
        let h = -z.logp + self.kinetic(&z.p);
        if h.is_nan() {
            f64::INFINITY
        } else {
            h
        }
    }

    fn sample_momentum(&self, p: &mut [f64], rng: &mut ChaCha8Rng) {
        for (p, m) in p.iter_mut().zip(&self.inv_metric) {
            let z: f64 = StandardNormal.sample(rng);
            *p = z / m.sqrt();
        }
    }

    /// One leapfrog step of `self.z` with step `eps` (negative: backwards in time).
    fn leapfrog(&mut self, eps: f64) {
        let z = &mut self.z;
        kick_and_drift(&mut z.q, &mut z.p, &z.g, &self.inv_metric, eps);
        z.logp = self.posterior.logp_and_grad(&z.q, &mut z.g);
        kick(&mut z.p, &z.g, 0.5 * eps);
    }

    /// Stan's heuristic: double or halve `start` until one leapfrog step from `state` with a
    /// fresh momentum crosses an acceptance probability of 0.8.
    fn find_reasonable_step_size(
        &mut self,
        state: &Point,
        start: f64,
        rng: &mut ChaCha8Rng,
    ) -> f64 {
        let mut eps = start;
        let mut direction = 0.0;
        for _ in 0..100 {
            self.z.copy_from(state);
            let mut p = std::mem::take(&mut self.z.p);
            self.sample_momentum(&mut p, rng);
            self.z.p = p;
            let h0 = self.hamiltonian(&self.z);
            self.leapfrog(eps);
            let delta_h = h0 - self.hamiltonian(&self.z);
            let up = delta_h > 0.8f64.ln();
            if direction == 0.0 {
                direction = if up { 1.0 } else { -1.0 };
            } else if up != (direction > 0.0) {
                break;
            }
            let next = if direction > 0.0 {
                2.0 * eps
            } else {
                0.5 * eps
            };
            if !(next > 1e-12 && next < 1e7) {
                break;
            }
            eps = next;
        }
        eps
    }

    /// One NUTS transition from `state` (position, gradient and log density are read; the
    /// momentum is resampled), which is replaced by the new state.
    fn transition(&mut self, state: &mut Point, rng: &mut ChaCha8Rng) -> Transition {
        let mut e = self
            .ends
            .take()
            .expect("ends are returned after every transition");
        self.sample_momentum(&mut state.p, rng);
        self.h0 = self.hamiltonian(state);
        self.leapfrog_steps = 0;
        self.sum_metro_prob = 0.0;
        self.divergent = false;

        e.fwd.copy_from(state);
        e.bck.copy_from(state);
        e.sample.copy_from(state);
        for v in [
            &mut e.p_fwd_fwd,
            &mut e.p_fwd_bck,
            &mut e.p_bck_fwd,
            &mut e.p_bck_bck,
        ] {
            v.copy_from_slice(&state.p);
        }
        for i in 0..state.p.len() {
            let s = state.p[i] * self.inv_metric[i];
            e.p_sharp_fwd_fwd[i] = s;
            e.p_sharp_fwd_bck[i] = s;
            e.p_sharp_bck_fwd[i] = s;
            e.p_sharp_bck_bck[i] = s;
        }
        e.rho.copy_from_slice(&state.p);
        let mut log_sum_weight = 0.0;
        let mut depth = 0;

        while depth < self.max_depth {
            e.rho_fwd.fill(0.0);
            e.rho_bck.fill(0.0);
            let mut log_sum_weight_subtree = f64::NEG_INFINITY;
            let forward = rng.random::<f64>() > 0.5;
            let valid = if forward {
                // The old trajectory becomes the backward part. Swaps rather than copies:
                // the end left behind is overwritten before it is read again.
                std::mem::swap(&mut self.z, &mut e.fwd);
                e.rho_bck.copy_from_slice(&e.rho);
                e.p_bck_fwd.copy_from_slice(&e.p_fwd_fwd);
                e.p_sharp_bck_fwd.copy_from_slice(&e.p_sharp_fwd_fwd);
                let valid = self.build_tree(
                    depth,
                    self.step_size,
                    &mut e.propose,
                    &mut e.p_sharp_fwd_bck,
                    &mut e.p_sharp_fwd_fwd,
                    &mut e.rho_fwd,
                    &mut e.p_fwd_bck,
                    &mut e.p_fwd_fwd,
                    &mut log_sum_weight_subtree,
                    rng,
                );
                std::mem::swap(&mut e.fwd, &mut self.z);
                valid
            } else {
                std::mem::swap(&mut self.z, &mut e.bck);
                e.rho_fwd.copy_from_slice(&e.rho);
                e.p_fwd_bck.copy_from_slice(&e.p_bck_bck);
                e.p_sharp_fwd_bck.copy_from_slice(&e.p_sharp_bck_bck);
                let valid = self.build_tree(
                    depth,
                    -self.step_size,
                    &mut e.propose,
                    &mut e.p_sharp_bck_fwd,
                    &mut e.p_sharp_bck_bck,
                    &mut e.rho_bck,
                    &mut e.p_bck_fwd,
                    &mut e.p_bck_bck,
                    &mut log_sum_weight_subtree,
                    rng,
                );
                std::mem::swap(&mut e.bck, &mut self.z);
                valid
            };
            if !valid {
                break;
            }
            depth += 1;

            // Biased progressive sampling: prefer the new sub-tree.
            if log_sum_weight_subtree > log_sum_weight
                || rng.random::<f64>() < exp_nonpos(log_sum_weight_subtree - log_sum_weight)
            {
                // `propose` is rewritten by the next sub-tree before it is read.
                std::mem::swap(&mut e.sample, &mut e.propose);
            }
            log_sum_weight = log_sum_exp(log_sum_weight, log_sum_weight_subtree);

            // The whole trajectory is a sub-tree whose halves are its backward and forward
            // parts: the same sum and checks as inside the tree.
            e.rho.fill(0.0);
            let halves = Halves {
                rho_init: &e.rho_bck,
                rho_final: &e.rho_fwd,
                p_init_end: &e.p_bck_fwd,
                p_final_beg: &e.p_fwd_bck,
                p_sharp_beg: &e.p_sharp_bck_bck,
                p_sharp_init_end: &e.p_sharp_bck_fwd,
                p_sharp_final_beg: &e.p_sharp_fwd_bck,
                p_sharp_end: &e.p_sharp_fwd_fwd,
            };
            if !merge(&halves, &mut e.rho).iter().all(|&x| x > 0.0) {
                break;
            }
        }

        state.copy_state_from(&e.sample);
        let steps = self.leapfrog_steps;
        self.ends = Some(e);
        Transition {
            accept_stat: if steps > 0 {
                self.sum_metro_prob / steps as f64
            } else {
                0.0
            },
            leapfrog_steps: steps,
            depth,
            divergent: self.divergent,
        }
    }

    /// Stan's `build_tree`: integrates `2^depth` steps of size `eps` from `self.z`, samples a
    /// proposal from them into `propose`, and accumulates their momenta into `rho`. Returns
    /// false on a divergence or a U-turn inside the sub-tree.
    #[allow(clippy::too_many_arguments)] // the recursion's in/out buffers, as in Stan
    fn build_tree(
        &mut self,
        depth: usize,
        eps: f64,
        propose: &mut Point,
        p_sharp_beg: &mut [f64],
        p_sharp_end: &mut [f64],
        rho: &mut [f64],
        p_beg: &mut [f64],
        p_end: &mut [f64],
        log_sum_weight: &mut f64,
        rng: &mut ChaCha8Rng,
    ) -> bool {
        if depth == 0 {
            self.leapfrog(eps);
            self.leapfrog_steps += 1;
            let twice_kinetic = leaf(
                &self.z.p,
                &self.inv_metric,
                LeafOut {
                    p_sharp_beg,
                    p_sharp_end,
                    rho,
                    p_beg,
                    p_end,
                },
            );
            let h = -self.z.logp + 0.5 * twice_kinetic;
            let h = if h.is_nan() { f64::INFINITY } else { h };
            if h - self.h0 > MAX_DELTA_H {
                self.divergent = true;
            }
            let w = self.h0 - h;
            *log_sum_weight = log_sum_exp(*log_sum_weight, w);
            self.sum_metro_prob += if w > 0.0 { 1.0 } else { exp_nonpos(w) };
            propose.copy_state_from(&self.z);
            return !self.divergent;
        }

        let mut level = std::mem::take(&mut self.levels[depth]);
        let mut propose_final = level
            .propose_final
            .take()
            .expect("level buffers are restored");
        let result = (|| {
            let mut log_sum_weight_init = f64::NEG_INFINITY;
            level.rho_init.fill(0.0);
            if !self.build_tree(
                depth - 1,
                eps,
                propose,
                p_sharp_beg,
                &mut level.p_sharp_init_end,
                &mut level.rho_init,
                p_beg,
                &mut level.p_init_end,
                &mut log_sum_weight_init,
                rng,
            ) {
                return false;
            }
            let mut log_sum_weight_final = f64::NEG_INFINITY;
            level.rho_final.fill(0.0);
            if !self.build_tree(
                depth - 1,
                eps,
                &mut propose_final,
                &mut level.p_sharp_final_beg,
                p_sharp_end,
                &mut level.rho_final,
                &mut level.p_final_beg,
                p_end,
                &mut log_sum_weight_final,
                rng,
            ) {
                return false;
            }
            // Uniform progressive sampling within the sub-tree.
            let log_sum_weight_subtree = log_sum_exp(log_sum_weight_init, log_sum_weight_final);
            *log_sum_weight = log_sum_exp(*log_sum_weight, log_sum_weight_subtree);
            if rng.random::<f64>() < exp_nonpos(log_sum_weight_final - log_sum_weight_subtree) {
                // The final half's proposal is not needed after this.
                std::mem::swap(propose, &mut propose_final);
            }
            merge(
                &Halves {
                    rho_init: &level.rho_init,
                    rho_final: &level.rho_final,
                    p_init_end: &level.p_init_end,
                    p_final_beg: &level.p_final_beg,
                    p_sharp_beg,
                    p_sharp_init_end: &level.p_sharp_init_end,
                    p_sharp_final_beg: &level.p_sharp_final_beg,
                    p_sharp_end,
                },
                rho,
            )
            .iter()
            .all(|&x| x > 0.0)
        })();
        level.propose_final = Some(propose_final);
        self.levels[depth] = level;
        result
    }
}

/// Stan's dual averaging of the log step size towards a target mean acceptance statistic.
#[derive(Debug, Clone)]
struct StepSizeAdaptation {
    target: f64,
    mu: f64,
    counter: f64,
    s_bar: f64,
    x_bar: f64,
}

impl StepSizeAdaptation {
    const GAMMA: f64 = 0.05;
    const T0: f64 = 10.0;
    const KAPPA: f64 = 0.75;

    fn new(target: f64) -> Self {
        StepSizeAdaptation {
            target,
            mu: 0.0,
            counter: 0.0,
            s_bar: 0.0,
            x_bar: 0.0,
        }
    }

    /// Restarts the averaging around `10 × step_size`.
    fn restart(&mut self, step_size: f64) {
        self.mu = (10.0 * step_size).ln();
        self.counter = 0.0;
        self.s_bar = 0.0;
        self.x_bar = 0.0;
    }

    /// Feeds one acceptance statistic and returns the next step size.
    fn learn(&mut self, accept_stat: f64) -> f64 {
        self.counter += 1.0;
        let accept = accept_stat.min(1.0);
        let eta = 1.0 / (self.counter + Self::T0);
        self.s_bar = (1.0 - eta) * self.s_bar + eta * (self.target - accept);
        let x = self.mu - self.s_bar * self.counter.sqrt() / Self::GAMMA;
        let x_eta = self.counter.powf(-Self::KAPPA);
        self.x_bar = (1.0 - x_eta) * self.x_bar + x_eta * x;
        x.exp()
    }

    /// The step size used after warm-up: the averaged iterate.
    fn final_step_size(&self) -> f64 {
        self.x_bar.exp()
    }
}

/// Stan's windowed estimation of the diagonal metric: an initial buffer of fast (step-size
/// only) adaptation, doubling windows in which the variances of the positions are estimated,
/// and a final fast buffer.
#[derive(Debug, Clone)]
struct MetricAdaptation {
    num_warmup: usize,
    init_buffer: usize,
    term_buffer: usize,
    window_size: usize,
    next_window: usize,
    counter: usize,
    /// Welford accumulators.
    n: f64,
    mean: Vec<f64>,
    m2: Vec<f64>,
    enabled: bool,
}

impl MetricAdaptation {
    fn new(num_warmup: usize, dim: usize) -> Self {
        let (mut init_buffer, mut term_buffer, mut base_window) = (75, 50, 25);
        let enabled = num_warmup >= 20;
        if enabled && init_buffer + base_window + term_buffer > num_warmup {
            init_buffer = num_warmup * 15 / 100;
            term_buffer = num_warmup / 10;
            base_window = num_warmup - (init_buffer + term_buffer);
        }
        MetricAdaptation {
            num_warmup,
            init_buffer,
            term_buffer,
            window_size: base_window,
            next_window: (init_buffer + base_window).saturating_sub(1),
            counter: 0,
            n: 0.0,
            mean: vec![0.0; dim],
            m2: vec![0.0; dim],
            enabled,
        }
    }

    fn in_window(&self) -> bool {
        self.counter >= self.init_buffer
            && self.counter < self.num_warmup - self.term_buffer
            && self.counter != self.num_warmup
    }

    fn window_ends(&self) -> bool {
        self.counter == self.next_window && self.counter != self.num_warmup
    }

    fn compute_next_window(&mut self) {
        let last = self.num_warmup - self.term_buffer - 1;
        if self.next_window == last {
            return;
        }
        self.window_size *= 2;
        self.next_window = self.counter + self.window_size;
        if self.next_window != last && self.next_window + 2 * self.window_size > last {
            self.next_window = last;
        }
    }

    /// Feeds the position of one warm-up iteration; at the end of a window writes the
    /// regularised variances to `inv_metric` and returns true.
    fn learn(&mut self, q: &[f64], inv_metric: &mut [f64]) -> bool {
        if !self.enabled {
            return false;
        }
        if self.in_window() {
            self.n += 1.0;
            for ((x, mean), m2) in q.iter().zip(&mut self.mean).zip(&mut self.m2) {
                let delta = x - *mean;
                *mean += delta / self.n;
                *m2 += delta * (x - *mean);
            }
        }
        if self.window_ends() {
            self.compute_next_window();
            let n = self.n;
            // Shrink towards 1e-3 as Stan does, so that a short window cannot collapse a
            // coordinate.
            for (v, m2) in inv_metric.iter_mut().zip(&self.m2) {
                let var = if n > 1.0 { m2 / (n - 1.0) } else { 1.0 };
                *v = (n / (n + 5.0)) * var + 1e-3 * (5.0 / (n + 5.0));
            }
            self.n = 0.0;
            self.mean.fill(0.0);
            self.m2.fill(0.0);
            self.counter += 1;
            return true;
        }
        self.counter += 1;
        false
    }
}

struct Adaptation {
    step_size: StepSizeAdaptation,
    metric: MetricAdaptation,
}

impl Adaptation {
    fn new(num_warmup: usize, dim: usize, target_accept: f64) -> Self {
        Adaptation {
            step_size: StepSizeAdaptation::new(target_accept),
            metric: MetricAdaptation::new(num_warmup, dim),
        }
    }
}

#[cfg(test)]
mod tests {
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
            let add = |a: &[f64], b: &[f64]| -> Vec<f64> {
                a.iter().zip(b).map(|(x, y)| x + y).collect()
            };
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
                     per draw {:.2} leapfrog steps (warm-up {:.2}); \
                     step sizes {step_sizes:?}; divergences {div}, depth hits {hits}; \
                     min bulk ESS {ess:.0}",
                    times[0],
                    times[2],
                    per(|s| s.leapfrog_steps),
                    per(|s| s.warmup_leapfrog_steps),
                );
            }
        }
    }
}
