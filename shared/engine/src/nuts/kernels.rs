//! The vector kernels of the tree's bookkeeping and of the leapfrog step. Each entry point
//! has a scalar path and, on x86-64 CPUs with AVX2, a 4-wide one that gives the same bits.

/// Where a new leaf's momentum goes: its sharp momentum `p♯ = M⁻¹p` as both ends of a
/// one-point sub-tree, the sub-tree's momentum sum, and its end momenta.
pub(super) struct LeafOut<'b> {
    pub(super) p_sharp_beg: &'b mut [f64],
    pub(super) p_sharp_end: &'b mut [f64],
    pub(super) rho: &'b mut [f64],
    pub(super) p_beg: &'b mut [f64],
    pub(super) p_end: &'b mut [f64],
}

/// Records the leaf with momentum `p` in one pass and returns `p·p♯` (twice the kinetic
/// energy). The tree's bookkeeping per leapfrog step is a handful of passes over the momenta;
/// fused, and with 4-wide vectors where the CPU has them, it costs a fraction as much.
pub(super) fn leaf(p: &[f64], inv_metric: &[f64], out: LeafOut) -> f64 {
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
pub(super) fn leaf_impl(p: &[f64], inv_metric: &[f64], mut out: LeafOut) -> f64 {
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
pub(super) struct Halves<'b> {
    pub(super) rho_init: &'b [f64],
    pub(super) rho_final: &'b [f64],
    pub(super) p_init_end: &'b [f64],
    pub(super) p_final_beg: &'b [f64],
    pub(super) p_sharp_beg: &'b [f64],
    pub(super) p_sharp_init_end: &'b [f64],
    pub(super) p_sharp_final_beg: &'b [f64],
    pub(super) p_sharp_end: &'b [f64],
}

/// Adds the sub-tree's momentum sum to `rho` and returns the six dot products of Stan's three
/// no-U-turn checks (across the sub-tree, and across each half extended by the nearest point of
/// the other), all positive when the trajectory goes on. One pass computes all six; the checks
/// have no side effects, so evaluating all of them gives the same answer as stopping at the
/// first failure.
pub(super) fn merge(h: &Halves, rho: &mut [f64]) -> [f64; 6] {
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
pub(super) fn merge_impl(h: &Halves, rho: &mut [f64]) -> [f64; 6] {
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
pub(super) fn kick_and_drift(
    q: &mut [f64],
    p: &mut [f64],
    g: &[f64],
    inv_metric: &[f64],
    eps: f64,
) {
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
pub(super) fn kick(p: &mut [f64], g: &[f64], half: f64) {
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
