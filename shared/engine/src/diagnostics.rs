//! Convergence diagnostics of Vehtari et al. (2021), "Rank-normalization, folding, and
//! localization: an improved R-hat for assessing convergence of MCMC": rank-normalised split
//! R-hat (bulk and folded) and rank-normalised split bulk ESS, computed as the R package
//! `posterior` (`rhat()`, `ess_bulk()`) and ArviZ (`az.rhat(method="rank")`,
//! `az.ess(method="bulk")`) do.
//!
//! Conventions where the references leave a choice:
//! - Chains of different lengths are truncated to the shortest one (the first draws are kept).
//! - Split chains of odd length drop their middle draw, as both references do.
//! - A single chain is allowed: it is split into two halves (as `posterior`; ArviZ refuses to
//!   compute R-hat for one chain).
//! - NaN is returned, never a panic, when the statistic is undefined: no chains, a non-finite
//!   draw, constant draws (the `posterior` convention; ArviZ returns the draw count as ESS),
//!   fewer than 4 draws per chain for R-hat, or fewer than 6 draws per chain for ESS (split
//!   halves of fewer than 3 draws, `posterior`'s limit).

pub use crate::mcmc::{ChainDraws, Samples};
pub use crate::numeric::quantile;

/// Rank-normalised split R-hat: the maximum of the bulk R-hat and the R-hat of the draws folded
/// around their median, both computed on rank-normalised split chains.
pub fn split_rhat_rank(chains: &[Vec<f64>]) -> f64 {
    rhat_and_ess_bulk(chains).0
}

/// Rank-normalised split bulk effective sample size (`posterior::ess_bulk`), with Geyer's
/// initial positive and monotone sequences and the "improved" antithetic-safe truncation.
pub fn ess_bulk(chains: &[Vec<f64>]) -> f64 {
    let Some(split) = split_chains(chains) else {
        return f64::NAN;
    };
    ess_basic(&z_scale(&split))
}

/// [`split_rhat_rank`] and [`ess_bulk`] together; they share the rank-normalised split chains,
/// the costly part (a sort and an inverse normal CDF per draw).
fn rhat_and_ess_bulk(chains: &[Vec<f64>]) -> (f64, f64) {
    let Some(split) = split_chains(chains) else {
        return (f64::NAN, f64::NAN);
    };
    let order = value_order(&split);
    let z = z_scale_ordered(&split, &order);
    let ess = ess_basic(&z);
    if split[0].len() < 2 {
        return (f64::NAN, ess);
    }
    let bulk = rhat_basic(&z);

    // Fold around the median of every retained draw of the unsplit chains (posterior's
    // `fold_draws`); for chains of even length this is also what ArviZ does.
    let n = chains.iter().map(Vec::len).min().unwrap_or(0);
    let mut all: Vec<f64> = chains.iter().flat_map(|c| c[..n].iter().copied()).collect();
    let med = median(&mut all);
    let folded: Vec<Vec<f64>> = split
        .iter()
        .map(|c| c.iter().map(|x| (x - med).abs()).collect())
        .collect();
    let tail = rhat_basic(&z_scale_ordered(&folded, &fold_order(&order, med)));

    // R's max(): NaN in either part makes the result NaN.
    let rhat = if bulk.is_nan() || tail.is_nan() {
        f64::NAN
    } else {
        bulk.max(tail)
    };
    (rhat, ess)
}

/// R-hat and bulk ESS of one coordinate of `p`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CoordinateDiagnostics {
    pub rhat: f64,
    pub ess_bulk: f64,
}

/// Diagnostics of every coordinate of `p` and their worst values.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplesDiagnostics {
    /// One entry per coordinate of `p`.
    pub per_coordinate: Vec<CoordinateDiagnostics>,
    /// Largest R-hat over the coordinates; NaN if any coordinate's R-hat is NaN, so an
    /// undefined diagnostic is never mistaken for a good one.
    pub max_rhat: f64,
    /// Smallest bulk ESS over the coordinates; NaN if any coordinate's ESS is NaN.
    pub min_ess_bulk: f64,
}

/// R-hat and bulk ESS for every coordinate of the `p` draws in `samples`. The dimension is
/// taken from the first draw; with no draws at all the result has no coordinates and NaN
/// summaries.
pub fn diagnose_samples(samples: &Samples) -> SamplesDiagnostics {
    let dim = samples
        .chains
        .iter()
        .find_map(|c| c.draws.first().map(Vec::len))
        .unwrap_or(0);
    let coordinate = |i: usize| {
        let chains: Vec<Vec<f64>> = samples
            .chains
            .iter()
            .map(|c| {
                c.draws
                    .iter()
                    .map(|d| d.get(i).copied().unwrap_or(f64::NAN))
                    .collect()
            })
            .collect();
        let (rhat, ess_bulk) = rhat_and_ess_bulk(&chains);
        CoordinateDiagnostics { rhat, ess_bulk }
    };
    // Coordinates are independent: spread them over the cores (the sampler's threads are done).
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, dim.max(1));
    let per_coordinate: Vec<CoordinateDiagnostics> = if threads == 1 {
        (0..dim).map(coordinate).collect()
    } else {
        let coordinate = &coordinate;
        std::thread::scope(|scope| {
            let handles: Vec<_> = (1..threads)
                .map(|t| {
                    scope.spawn(move || {
                        (t..dim)
                            .step_by(threads)
                            .map(|i| (i, coordinate(i)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let mut slots: Vec<Option<CoordinateDiagnostics>> = vec![None; dim];
            for i in (0..dim).step_by(threads) {
                slots[i] = Some(coordinate(i));
            }
            for handle in handles {
                // A panic here is a bug in this module; surface it as NaN diagnostics.
                for (i, c) in handle.join().unwrap_or_default() {
                    slots[i] = Some(c);
                }
            }
            slots
                .into_iter()
                .map(|c| {
                    c.unwrap_or(CoordinateDiagnostics {
                        rhat: f64::NAN,
                        ess_bulk: f64::NAN,
                    })
                })
                .collect()
        })
    };
    let worst = |value: fn(&CoordinateDiagnostics) -> f64, pick: fn(f64, f64) -> f64| {
        let mut acc: Option<f64> = None;
        for c in &per_coordinate {
            let v = value(c);
            if v.is_nan() {
                return f64::NAN;
            }
            acc = Some(acc.map_or(v, |a| pick(a, v)));
        }
        acc.unwrap_or(f64::NAN)
    };
    let max_rhat = worst(|c| c.rhat, f64::max);
    let min_ess_bulk = worst(|c| c.ess_bulk, f64::min);
    SamplesDiagnostics {
        per_coordinate,
        max_rhat,
        min_ess_bulk,
    }
}

/// Splits every chain (truncated to the shortest length) into its first and second halves.
/// `None` when there is nothing to diagnose or a draw is not finite.
fn split_chains(chains: &[Vec<f64>]) -> Option<Vec<Vec<f64>>> {
    let n = chains.iter().map(Vec::len).min()?;
    if chains.iter().any(|c| c[..n].iter().any(|x| !x.is_finite())) {
        return None;
    }
    let half = n / 2;
    if half == 0 {
        return None;
    }
    let mut out = Vec::with_capacity(2 * chains.len());
    for c in chains {
        out.push(c[..half].to_vec());
        out.push(c[n - half..n].to_vec());
    }
    Some(out)
}

/// Replaces every draw by Φ⁻¹((r − 3/8)/(S + 1/4)), with r its average rank among all S draws
/// of all chains (Blom's offset, as `posterior::z_scale`).
fn z_scale(chains: &[Vec<f64>]) -> Vec<Vec<f64>> {
    z_scale_ordered(chains, &value_order(chains))
}

/// Every draw of `chains` (flattened, chain after chain) with its position, in increasing
/// order. Sorting the pairs keeps the comparisons in cache.
fn value_order(chains: &[Vec<f64>]) -> Vec<(f64, usize)> {
    let mut order: Vec<(f64, usize)> = chains.iter().flatten().copied().zip(0..).collect();
    order.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    order
}

/// The draws `|x − med|` in increasing order, from `order`, the draws `x` in increasing order:
/// below the median the folded value falls as `x` rises and above it it grows, so merging the
/// two runs replaces a second sort.
fn fold_order(order: &[(f64, usize)], med: f64) -> Vec<(f64, usize)> {
    let folded = |&(x, k): &(f64, usize)| ((x - med).abs(), k);
    let split = order.partition_point(|&(x, _)| x < med);
    let mut below = order[..split].iter().rev().map(folded).peekable();
    let mut above = order[split..].iter().map(folded).peekable();
    let mut out = Vec::with_capacity(order.len());
    loop {
        let next = match (below.peek(), above.peek()) {
            (Some(b), Some(a)) if b.0 < a.0 => below.next(),
            (_, Some(_)) => above.next(),
            (Some(_), None) => below.next(),
            (None, None) => break,
        };
        out.extend(next);
    }
    out
}

/// [`z_scale`] with the draws' order given: `order` is [`value_order`] of `chains`, or any
/// other increasing order of the same values and positions (the order among equal values does
/// not matter, since ties share their average rank).
fn z_scale_ordered(chains: &[Vec<f64>], order: &[(f64, usize)]) -> Vec<Vec<f64>> {
    let s = order.len();
    let mut ranks = vec![0.0; s];
    let mut i = 0;
    while i < s {
        let mut j = i + 1;
        while j < s && order[j].0 == order[i].0 {
            j += 1;
        }
        // Ties share the average of the 1-based ranks i+1..=j.
        let avg = (i + 1 + j) as f64 / 2.0;
        for &(_, k) in &order[i..j] {
            ranks[k] = avg;
        }
        i = j;
    }
    let denom = s as f64 + 0.25;
    let mut it = ranks.into_iter();
    chains
        .iter()
        .map(|c| {
            c.iter()
                .map(|_| inverse_normal_cdf((it.next().unwrap_or(f64::NAN) - 0.375) / denom))
                .collect()
        })
        .collect()
}

/// `posterior`'s `should_return_NA`: every value equal up to machine epsilon.
fn is_constant(chains: &[Vec<f64>]) -> bool {
    let (lo, hi) = chains
        .iter()
        .flatten()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        });
    (hi - lo).abs() < f64::EPSILON
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// Sample variance with denominator n − 1.
fn var(x: &[f64]) -> f64 {
    let m = mean(x);
    x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (x.len() as f64 - 1.0)
}

/// The median, from one selection instead of a sort: for an even count the lower middle
/// value is the largest of the values below the upper one.
fn median(x: &mut [f64]) -> f64 {
    let n = x.len();
    if n == 0 {
        return f64::NAN;
    }
    let (below, &mut upper, _) = x.select_nth_unstable_by(n / 2, f64::total_cmp);
    match below.iter().copied().max_by(f64::total_cmp) {
        Some(lower) if n.is_multiple_of(2) => 0.5 * (lower + upper),
        _ => upper,
    }
}

/// Classic (Gelman–Rubin) R-hat of equal-length chains (`posterior`'s `.rhat`).
fn rhat_basic(chains: &[Vec<f64>]) -> f64 {
    if chains.is_empty() || chains[0].len() < 2 || is_constant(chains) {
        return f64::NAN;
    }
    let n = chains[0].len() as f64;
    let means: Vec<f64> = chains.iter().map(|c| mean(c)).collect();
    let var_within = chains.iter().map(|c| var(c)).sum::<f64>() / chains.len() as f64;
    // var() of a single chain mean is NA in R; with split chains there are always ≥ 2.
    let var_between = if means.len() > 1 {
        n * var(&means)
    } else {
        0.0
    };
    ((var_between / var_within + n - 1.0) / n).sqrt()
}

/// Biased (divide-by-n) autocovariance of a centred chain at one lag, by direct summation:
/// the Geyer truncation stops after a few lags in practice, so no FFT is needed.
fn autocov_at(centred: &[f64], lag: usize) -> f64 {
    let n = centred.len();
    centred[..n - lag]
        .iter()
        .zip(&centred[lag..])
        .map(|(a, b)| a * b)
        .sum::<f64>()
        / n as f64
}

/// Effective sample size of equal-length chains (`posterior`'s `.ess`).
fn ess_basic(chains: &[Vec<f64>]) -> f64 {
    let m = chains.len();
    let n = chains.first().map_or(0, Vec::len);
    if m == 0 || n < 3 || is_constant(chains) {
        return f64::NAN;
    }
    let chain_means: Vec<f64> = chains.iter().map(|c| mean(c)).collect();
    let centred: Vec<Vec<f64>> = chains
        .iter()
        .zip(&chain_means)
        .map(|(c, mu)| c.iter().map(|x| x - mu).collect())
        .collect();
    let acov_mean = |lag: usize| centred.iter().map(|c| autocov_at(c, lag)).sum::<f64>() / m as f64;

    let nf = n as f64;
    let mean_var = acov_mean(0) * nf / (nf - 1.0);
    let mut var_plus = mean_var * (nf - 1.0) / nf;
    if m > 1 {
        var_plus += var(&chain_means);
    }
    let rho = |lag: usize| 1.0 - (mean_var - acov_mean(lag)) / var_plus;

    // Indices below are 0-based versions of posterior's 1-based loop.
    let mut rho_hat = vec![0.0; n];
    let mut t = 0usize;
    let mut rho_even = 1.0;
    rho_hat[0] = rho_even;
    let mut rho_odd = rho(1);
    rho_hat[1] = rho_odd;
    // Geyer's initial positive sequence: sum pairs until one is negative.
    while t + 5 < n && !(rho_even + rho_odd).is_nan() && rho_even + rho_odd > 0.0 {
        t += 2;
        rho_even = rho(t);
        rho_odd = rho(t + 1);
        if rho_even + rho_odd >= 0.0 {
            rho_hat[t] = rho_even;
            rho_hat[t + 1] = rho_odd;
        }
    }
    let max_t = t;
    // The improved estimate adds the last even term when it is positive.
    if rho_even > 0.0 {
        rho_hat[max_t] = rho_even;
    }
    // Geyer's initial monotone sequence: pair sums must not increase.
    let mut t = 0usize;
    while t + 4 <= max_t {
        t += 2;
        if rho_hat[t] + rho_hat[t + 1] > rho_hat[t - 2] + rho_hat[t - 1] {
            rho_hat[t] = (rho_hat[t - 2] + rho_hat[t - 1]) / 2.0;
            rho_hat[t + 1] = rho_hat[t];
        }
    }
    let ess = (m * n) as f64;
    let tau_hat = -1.0 + 2.0 * rho_hat[..max_t].iter().sum::<f64>() + rho_hat[max_t];
    // Caps ESS at S·log10(S) for antithetic chains, as posterior does.
    let tau_hat = tau_hat.max(1.0 / ess.log10());
    ess / tau_hat
}

// Coefficients of AS 241 (PPND16), lowest power first; B, D and F are denominators.
const AS241_A: [f64; 8] = [
    3.3871328727963665,
    133.14166789178438,
    1971.5909503065513,
    13731.69376550946,
    45921.95393154987,
    67265.7709270087,
    33430.57558358813,
    2509.0809287301227,
];
const AS241_B: [f64; 8] = [
    1.0,
    42.31333070160091,
    687.1870074920579,
    5394.196021424751,
    21213.794301586597,
    39307.89580009271,
    28729.085735721943,
    5226.495278852854,
];
const AS241_C: [f64; 8] = [
    1.4234371107496835,
    4.630337846156546,
    5.769497221460691,
    3.6478483247632045,
    1.2704582524523684,
    0.2417807251774506,
    0.022723844989269184,
    0.0007745450142783414,
];
const AS241_D: [f64; 8] = [
    1.0,
    2.053191626637759,
    1.6763848301838038,
    0.6897673349851,
    0.14810397642748008,
    0.015198666563616457,
    0.0005475938084995345,
    1.0507500716444169e-09,
];
const AS241_E: [f64; 8] = [
    6.657904643501103,
    5.463784911164114,
    1.7848265399172913,
    0.29656057182850487,
    0.026532189526576124,
    0.0012426609473880784,
    2.7115555687434876e-05,
    2.0103343992922881e-07,
];
const AS241_F: [f64; 8] = [
    1.0,
    0.599832206555888,
    0.1369298809227358,
    0.014875361290850615,
    0.0007868691311456133,
    1.8463183175100548e-05,
    1.421511758316446e-07,
    2.0442631033899397e-15,
];

fn horner(coef: &[f64; 8], x: f64) -> f64 {
    coef.iter().rev().fold(0.0, |acc, c| acc * x + c)
}

/// Inverse of the standard normal CDF, Wichura's algorithm AS 241 (PPND16), relative accuracy
/// about 1e-16. Returns ∓∞ at 0 and 1 and NaN outside [0, 1].
pub fn inverse_normal_cdf(p: f64) -> f64 {
    if p.is_nan() || !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180625 - q * q;
        return q * horner(&AS241_A, r) / horner(&AS241_B, r);
    }
    let tail = if q < 0.0 { p } else { 1.0 - p };
    let r = (-tail.ln()).sqrt();
    let val = if r <= 5.0 {
        let r = r - 1.6;
        horner(&AS241_C, r) / horner(&AS241_D, r)
    } else {
        let r = r - 5.0;
        horner(&AS241_E, r) / horner(&AS241_F, r)
    };
    if q < 0.0 {
        -val
    } else {
        val
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcmc::ChainDraws;

    proptest::proptest! {
        /// The merge and the selection stand in for sorts: they must give the sorts' ranks
        /// and median exactly, ties (repeated draws, as a Metropolis chain has) included.
        #[test]
        fn folded_order_and_median_match_sorting(
            values in proptest::collection::vec(0u8..40, 1..300),
            med_pick in 0usize..300,
        ) {
            let x: Vec<f64> = values.iter().map(|&v| f64::from(v) / 7.0).collect();
            let chains = vec![x.clone()];
            let mut sorted = x.clone();
            sorted.sort_by(f64::total_cmp);
            let n = sorted.len();
            let sorted_median = if n % 2 == 1 {
                sorted[n / 2]
            } else {
                0.5 * (sorted[n / 2 - 1] + sorted[n / 2])
            };
            proptest::prop_assert_eq!(median(&mut x.clone()).to_bits(), sorted_median.to_bits());

            // Any fold point, not only the median: the merge relies on order alone.
            let med = sorted[med_pick % n];
            let folded: Vec<Vec<f64>> = vec![x.iter().map(|v| (v - med).abs()).collect()];
            let merged = fold_order(&value_order(&chains), med);
            proptest::prop_assert!(merged.windows(2).all(|w| w[0].0 <= w[1].0));
            let by_merge = z_scale_ordered(&folded, &merged);
            let by_sort = z_scale(&folded);
            proptest::prop_assert_eq!(by_merge, by_sort);
        }
    }

    /// 64-bit LCG (Knuth's MMIX constants); uniform from the top 53 bits.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Chain c: AR(1) `x_t = φ x_{t−1} + (U_t − 1/2)` from `Lcg(1000 + c)`, plus `c·shift`,
    /// optionally discretised as `floor(x·levels)` to create ties.
    fn ar1_chains(
        chains: usize,
        n: usize,
        phi: f64,
        shift: f64,
        levels: Option<f64>,
    ) -> Vec<Vec<f64>> {
        (0..chains)
            .map(|c| {
                let mut g = Lcg(1000 + c as u64);
                let mut x = 0.0;
                (0..n)
                    .map(|_| {
                        x = phi * x + (g.next() - 0.5);
                        let v = x + c as f64 * shift;
                        levels.map_or(v, |l| (v * l).floor())
                    })
                    .collect()
            })
            .collect()
    }

    fn assert_rel(actual: f64, expected: f64, what: &str) {
        let rel = ((actual - expected) / expected).abs();
        assert!(
            rel < 1e-6,
            "{what}: got {actual}, expected {expected} (rel {rel:e})"
        );
    }

    // Reference values: ArviZ 0.23.4 (numpy 2.4.6, scipy 1.17.1), `az.rhat(a, method="rank")`
    // and `az.ess(a, method="bulk")` on the same sequences, generated by a Python copy of
    // `Lcg`/`ar1_chains` (array of shape chains × draws). For one chain ArviZ gives no R-hat;
    // that value was computed from ArviZ's internal `_rhat(_z_scale(_split_chains(·)))` on the
    // bulk and on the draws folded around their median, which is posterior's `rhat()`.
    #[allow(clippy::type_complexity)]
    const CASES: &[(&str, usize, usize, f64, f64, Option<f64>, f64, f64)] = &[
        (
            "mixed_4x100",
            4,
            100,
            0.5,
            0.0,
            None,
            1.0162060437556846,
            133.2423254026165,
        ),
        (
            "shifted_4x100",
            4,
            100,
            0.5,
            0.15,
            None,
            1.208005414889652,
            15.507964679007213,
        ),
        (
            "sticky_4x200",
            4,
            200,
            0.9,
            0.0,
            None,
            1.0917706841840351,
            33.61505847911415,
        ),
        // Antithetic: ESS hits the S·log10(S) cap.
        (
            "antithetic_2x100",
            2,
            100,
            -0.6,
            0.0,
            None,
            1.0247101683225428,
            460.2059991327962,
        ),
        (
            "ties_3x120",
            3,
            120,
            0.3,
            0.0,
            Some(3.0),
            1.0036348328773534,
            245.26246402270186,
        ),
        // Odd length: the middle draw of every chain is dropped.
        (
            "odd_4x103",
            4,
            103,
            0.4,
            0.05,
            None,
            1.0488644376797074,
            92.65342972930551,
        ),
        (
            "single_1x150",
            1,
            150,
            0.7,
            0.0,
            None,
            1.0190604882553949,
            20.654002275148514,
        ),
        (
            "long_2x2000",
            2,
            2000,
            0.97,
            0.0,
            None,
            1.0073297611699366,
            86.44160715682202,
        ),
    ];

    #[test]
    fn generator_matches_the_python_copy() {
        let c = ar1_chains(4, 100, 0.5, 0.15, None);
        assert_eq!(c[0][0], -0.4212753507023298);
        assert_eq!(c[3][99], 0.27853549506088227);
    }

    #[test]
    fn rhat_and_ess_match_arviz() {
        for &(name, chains, n, phi, shift, levels, rhat, ess) in CASES {
            let draws = ar1_chains(chains, n, phi, shift, levels);
            assert_rel(split_rhat_rank(&draws), rhat, &format!("{name} rhat"));
            assert_rel(ess_bulk(&draws), ess, &format!("{name} ess"));
        }
    }

    #[test]
    fn inverse_normal_cdf_matches_known_quantiles() {
        // scipy.stats.norm.ppf values.
        let cases = [
            (0.5, 0.0),
            (0.975, 1.959963984540054),
            (0.025, -1.9599639845400545),
            (0.1, -1.2815515655446004),
            (1e-10, -6.361340902404056),
            (1.0 - 1e-4, 3.719016485455709),
            (1e-300, -37.0470962993612),
        ];
        for (p, z) in cases {
            let got = inverse_normal_cdf(p);
            assert!(
                (got - z).abs() <= 1e-12 * z.abs().max(1.0),
                "Φ⁻¹({p}) = {got}, want {z}"
            );
        }
        assert_eq!(inverse_normal_cdf(0.0), f64::NEG_INFINITY);
        assert_eq!(inverse_normal_cdf(1.0), f64::INFINITY);
        assert!(inverse_normal_cdf(1.5).is_nan());
    }

    #[test]
    fn degenerate_inputs_give_nan_not_panics() {
        let constant = vec![vec![0.3; 50], vec![0.3; 50]];
        assert!(split_rhat_rank(&constant).is_nan());
        assert!(ess_bulk(&constant).is_nan());
        assert!(split_rhat_rank(&[]).is_nan());
        assert!(ess_bulk(&[]).is_nan());
        assert!(split_rhat_rank(&[vec![]]).is_nan());
        assert!(split_rhat_rank(&[vec![1.0, 2.0, 3.0]]).is_nan());
        assert!(ess_bulk(&[vec![1.0, 2.0, 3.0, 4.0, 5.0]]).is_nan());
        assert!(split_rhat_rank(&[vec![1.0, f64::NAN, 3.0, 4.0]]).is_nan());
        assert!(ess_bulk(&[vec![1.0, f64::INFINITY, 3.0, 4.0, 5.0, 6.0]]).is_nan());
    }

    #[test]
    fn unequal_chains_are_truncated_to_the_shortest() {
        let mut draws = ar1_chains(4, 100, 0.5, 0.0, None);
        let reference = (split_rhat_rank(&draws), ess_bulk(&draws));
        draws[2].extend([5.0, 6.0, 7.0]);
        assert_eq!((split_rhat_rank(&draws), ess_bulk(&draws)), reference);
    }

    #[test]
    fn diagnose_samples_reports_every_coordinate_and_the_worst() {
        // Coordinate 0: the "mixed" chains; coordinate 1: the "shifted" ones.
        let a = ar1_chains(4, 100, 0.5, 0.0, None);
        let b = ar1_chains(4, 100, 0.5, 0.15, None);
        let samples = Samples {
            chains: (0..4)
                .map(|c| ChainDraws {
                    draws: (0..100).map(|t| vec![a[c][t], b[c][t]]).collect(),
                    divergences: 0,
                    max_depth_hits: 0,
                })
                .collect(),
        };
        let diag = diagnose_samples(&samples);
        assert_eq!(diag.per_coordinate.len(), 2);
        assert_rel(diag.per_coordinate[0].rhat, CASES[0].6, "coord 0 rhat");
        assert_rel(diag.per_coordinate[1].ess_bulk, CASES[1].7, "coord 1 ess");
        assert_eq!(diag.max_rhat, diag.per_coordinate[1].rhat);
        assert_eq!(diag.min_ess_bulk, diag.per_coordinate[1].ess_bulk);

        let empty = diagnose_samples(&Samples { chains: vec![] });
        assert!(empty.per_coordinate.is_empty() && empty.max_rhat.is_nan());
    }
}
