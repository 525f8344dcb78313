//! Small numerical routines: the Moore–Penrose solve R's `MASS::ginv` performs, digamma and
//! trigamma, the Dirichlet maximum-likelihood fit, `smart_round` and type-7 quantiles.

/// `x = pinv(A) b` for a square `A`, with singular values below `√ε · σ_max` dropped, as
/// `MASS::ginv` does. One-sided Jacobi SVD: exact enough for the ≤ 40 × 40 matrices here.
pub fn pinv_solve(a: &[Vec<f64>], b: &[f64]) -> Vec<f64> {
    let n = a.len();
    // Columns of U·Σ are orthogonalised in place in `u`; `v` accumulates the rotations.
    let mut u: Vec<Vec<f64>> = a.to_vec();
    let mut v: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
        .collect();
    for _sweep in 0..60 {
        let mut rotated = false;
        for p in 0..n {
            for q in p + 1..n {
                let (mut alpha, mut beta, mut gamma) = (0.0, 0.0, 0.0);
                for row in &u {
                    alpha += row[p] * row[p];
                    beta += row[q] * row[q];
                    gamma += row[p] * row[q];
                }
                if gamma.abs() <= 1e-15 * (alpha * beta).sqrt() || gamma == 0.0 {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let t = if zeta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                for row in u.iter_mut().chain(v.iter_mut()) {
                    let (x, y) = (row[p], row[q]);
                    row[p] = c * x - s * y;
                    row[q] = s * x + c * y;
                }
            }
        }
        if !rotated {
            break;
        }
    }
    let sigma: Vec<f64> = (0..n)
        .map(|j| u.iter().map(|row| row[j] * row[j]).sum::<f64>().sqrt())
        .collect();
    let sigma_max = sigma.iter().cloned().fold(0.0, f64::max);
    let tol = f64::EPSILON.sqrt() * sigma_max;
    // x = V Σ⁺ Uᵀ b, where column j of `u` is σ_j u_j.
    let mut x = vec![0.0; n];
    for j in 0..n {
        if sigma[j] > tol && sigma[j] > 0.0 {
            let coef: f64 = (0..n).map(|i| u[i][j] * b[i]).sum::<f64>() / (sigma[j] * sigma[j]);
            for (i, xi) in x.iter_mut().enumerate() {
                *xi += v[i][j] * coef;
            }
        }
    }
    x
}

/// ψ(x) for x > 0.
pub fn digamma(mut x: f64) -> f64 {
    let mut result = 0.0;
    while x < 10.0 {
        result -= 1.0 / x;
        x += 1.0;
    }
    let f = 1.0 / (x * x);
    result + x.ln()
        - 0.5 / x
        - f * (1.0 / 12.0
            - f * (1.0 / 120.0 - f * (1.0 / 252.0 - f * (1.0 / 240.0 - f * (1.0 / 132.0)))))
}

/// ψ′(x) for x > 0.
pub fn trigamma(mut x: f64) -> f64 {
    let mut result = 0.0;
    while x < 10.0 {
        result += 1.0 / (x * x);
        x += 1.0;
    }
    let f = 1.0 / (x * x);
    result
        + 1.0 / x
        + f / 2.0
        + f / x * (1.0 / 6.0 - f * (1.0 / 30.0 - f * (1.0 / 42.0 - f * (1.0 / 30.0))))
}

/// The total concentration `A` maximising `Σ_s log Dir(x_s | A·m)` for a fixed mean `m`, given
/// `target = −(1/N) Σ_s Σ_j m_j log x_sj`. It solves the score equation
/// `ψ(A) − Σ_j m_j ψ(A m_j) = target`; the left side falls from +∞ to the entropy of `m`, so
/// the root exists when `target` exceeds that entropy. Returns `None` otherwise (data with no
/// spread: the likelihood grows without bound).
pub fn dirichlet_concentration(mean: &[f64], target: f64) -> Option<f64> {
    let active: Vec<f64> = mean.iter().copied().filter(|&m| m > 0.0).collect();
    let score =
        |a: f64| digamma(a) - active.iter().map(|&m| m * digamma(a * m)).sum::<f64>() - target;
    let entropy: f64 = -active.iter().map(|&m| m * m.ln()).sum::<f64>();
    if !target.is_finite() || target <= entropy || active.len() < 2 {
        return None;
    }
    // Bracket the root in log A, then bisect with Newton steps where they stay inside.
    let (mut lo, mut hi) = (-30.0f64, 30.0f64);
    if score(hi.exp()) > 0.0 {
        return None;
    }
    let mut t = 0.0f64; // log A = 0, i.e. R's start c = 1 up to the factor R
    for _ in 0..200 {
        let a = t.exp();
        let s = score(a);
        if s > 0.0 {
            lo = t;
        } else {
            hi = t;
        }
        let ds = a * (trigamma(a) - active.iter().map(|&m| m * m * trigamma(a * m)).sum::<f64>());
        let newton = t - s / ds;
        t = if ds.is_finite() && ds != 0.0 && newton > lo && newton < hi {
            newton
        } else {
            0.5 * (lo + hi)
        };
        if (hi - lo) < 1e-14 || s.abs() < 1e-13 {
            break;
        }
    }
    Some(t.exp())
}

/// Largest-remainder rounding of `x` to whole numbers summing to `round(target)`, ties to the
/// lower index (vacalibration's `smart_round` with digits = 0).
pub fn smart_round(x: &[f64], target: f64) -> Vec<f64> {
    let total: f64 = x.iter().sum();
    let goal = target.round();
    let scaled: Vec<f64> = x.iter().map(|v| v / total * goal).collect();
    let mut rounded: Vec<f64> = scaled.iter().map(|v| v.floor()).collect();
    let short = (goal - rounded.iter().sum::<f64>()).round();
    if short > 0.0 {
        let mut order: Vec<usize> = (0..x.len()).collect();
        // Stable sort by decreasing remainder keeps the lower index first on ties.
        order.sort_by(|&a, &b| {
            let ra = scaled[a] - rounded[a];
            let rb = scaled[b] - rounded[b];
            rb.partial_cmp(&ra).unwrap_or(std::cmp::Ordering::Equal)
        });
        for &i in order.iter().take(short as usize) {
            rounded[i] += 1.0;
        }
    }
    rounded
}

/// R's default (type 7) quantile. `values` is reordered: two order statistics are selected
/// in linear time instead of sorting, with the same result as indexing the sorted values.
pub fn quantile(values: &mut [f64], prob: f64) -> f64 {
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    let h = (n - 1) as f64 * prob;
    let lo = h.floor() as usize;
    let hi = (h.ceil() as usize).min(n - 1);
    let (_, &mut at_lo, above) = values.select_nth_unstable_by(lo, f64::total_cmp);
    let at_hi = if hi > lo {
        above
            .iter()
            .copied()
            .min_by(f64::total_cmp)
            .unwrap_or(at_lo)
    } else {
        at_lo
    };
    at_lo + (h - lo as f64) * (at_hi - at_lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinv_solve_inverts_a_regular_matrix() {
        let a = vec![
            vec![0.7, 0.2, 0.1],
            vec![0.1, 0.8, 0.1],
            vec![0.3, 0.3, 0.4],
        ];
        let x_true = [0.2, 0.5, 0.3];
        let b: Vec<f64> = (0..3)
            .map(|i| (0..3).map(|j| a[i][j] * x_true[j]).sum())
            .collect();
        let x = pinv_solve(&a, &b);
        for (xi, ti) in x.iter().zip(x_true) {
            assert!((xi - ti).abs() < 1e-13, "{x:?}");
        }
    }

    #[test]
    fn pinv_solve_handles_a_singular_matrix_like_ginv() {
        // Rank 1: pinv gives the minimum-norm least-squares solution.
        let a = vec![vec![1.0, 1.0], vec![1.0, 1.0]];
        let x = pinv_solve(&a, &[2.0, 2.0]);
        assert!(
            (x[0] - 1.0).abs() < 1e-12 && (x[1] - 1.0).abs() < 1e-12,
            "{x:?}"
        );
    }

    #[test]
    fn digamma_and_trigamma_match_known_values() {
        let euler = 0.577_215_664_901_532_9;
        assert!((digamma(1.0) + euler).abs() < 1e-13);
        assert!((digamma(0.5) + euler + 2.0 * 2f64.ln()).abs() < 1e-13);
        assert!((digamma(0.006) - (-167.234_055_768_769_8)).abs() < 1e-6);
        assert!(
            (trigamma(1.0) - std::f64::consts::PI.powi(2) / 6.0).abs() < 1e-12,
            "{:e}",
            trigamma(1.0) - std::f64::consts::PI.powi(2) / 6.0
        );
        assert!((trigamma(0.5) - std::f64::consts::PI.powi(2) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn dirichlet_concentration_solves_the_score_equation() {
        let m = [0.5, 0.3, 0.2];
        let a_true = 12.0;
        let target = digamma(a_true) - m.iter().map(|&mj| mj * digamma(a_true * mj)).sum::<f64>();
        let a = dirichlet_concentration(&m, target).unwrap();
        assert!((a - a_true).abs() < 1e-9, "{a}");
        assert_eq!(dirichlet_concentration(&m, 0.1), None);
    }

    #[test]
    fn smart_round_uses_largest_remainders_and_lower_index_on_ties() {
        assert_eq!(smart_round(&[1.0, 1.0, 1.0], 100.0), vec![34.0, 33.0, 33.0]);
        assert_eq!(smart_round(&[0.126, 0.874], 100.0), vec![13.0, 87.0]);
        assert_eq!(
            smart_round(&[10.4, 20.6, 30.0], 61.0),
            vec![10.0, 21.0, 30.0]
        );
    }

    #[test]
    fn type7_quantile_interpolates() {
        let mut v = [3.0, 1.0, 4.0, 2.0];
        assert_eq!(quantile(&mut v, 0.0), 1.0);
        assert_eq!(quantile(&mut v, 1.0), 4.0);
        assert!((quantile(&mut v, 0.025) - 1.075).abs() < 1e-15);
        assert!((quantile(&mut v, 0.975) - 3.925).abs() < 1e-15);
        assert!(quantile(&mut [], 0.5).is_nan());
    }

    proptest::proptest! {
        /// Selecting the two order statistics gives exactly what indexing the sorted values
        /// gives, repeated values included.
        #[test]
        fn quantile_matches_the_sorted_definition(
            values in proptest::collection::vec(0u8..30, 1..200),
            prob in 0.0f64..=1.0,
        ) {
            let mut x: Vec<f64> = values.iter().map(|&v| f64::from(v) / 3.0).collect();
            let mut sorted = x.clone();
            sorted.sort_by(f64::total_cmp);
            let n = sorted.len();
            let h = (n - 1) as f64 * prob;
            let lo = h.floor() as usize;
            let hi = (h.ceil() as usize).min(n - 1);
            let expected = sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo]);
            proptest::prop_assert_eq!(quantile(&mut x, prob).to_bits(), expected.to_bits());
        }
    }
}
