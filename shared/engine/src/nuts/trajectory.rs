//! The trajectory of one NUTS transition: the points and buffers of the tree, and [`Nuts`],
//! which builds the tree and samples from it.

use rand::rngs::ChaCha8Rng;
use rand::RngExt;
use rand_distr::{Distribution, StandardNormal};

use super::kernels::{kick, kick_and_drift, leaf, merge, Halves, LeafOut};
use super::MAX_DELTA_H;
use crate::density::{exp_nonpos, ln_normal, Posterior};

/// A point in phase space: position, momentum, gradient and log density at the position.
#[derive(Debug, Clone)]
pub(crate) struct Point {
    pub(crate) q: Vec<f64>,
    p: Vec<f64>,
    pub(crate) g: Vec<f64>,
    pub(crate) logp: f64,
}

impl Point {
    pub(crate) fn new(dim: usize) -> Self {
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
pub(crate) struct Transition {
    pub(crate) accept_stat: f64,
    pub(crate) leapfrog_steps: u64,
    pub(crate) depth: usize,
    pub(crate) divergent: bool,
}

/// The no-U-turn sampler with a diagonal metric for one chain.
pub(super) struct Nuts<'a> {
    posterior: &'a Posterior,
    /// Diagonal of the inverse metric (the estimated posterior variances).
    pub(super) inv_metric: Vec<f64>,
    pub(super) step_size: f64,
    pub(super) max_depth: usize,
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

impl<'a> Nuts<'a> {
    pub(super) fn new(posterior: &'a Posterior, dim: usize, max_depth: usize) -> Self {
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
    pub(super) fn find_reasonable_step_size(
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
    pub(super) fn transition(&mut self, state: &mut Point, rng: &mut ChaCha8Rng) -> Transition {
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
