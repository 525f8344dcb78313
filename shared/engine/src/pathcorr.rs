//! Path correction (calibration-model.md §6): choose λ on the grid 0.99 (or 1.00), 0.98, …, 0
//! and build the matrix the model uses.

use rand::Rng;
use rand_distr::{Distribution, Gamma, StandardUniform};

use crate::error::EngineError;
use crate::numeric::{dirichlet_concentration, pinv_solve};

/// Draws per row for the random step (R: 1000).
const PATH_DRAWS: usize = 1000;
/// Added to every entry before refitting the Dirichlet (R: 1e-5).
const NUDGE: f64 = 1e-5;
/// R's `isTRUE(all.equal(λ, 0))` for the grid bottom.
const GRID_ZERO: f64 = 1.5e-8;

/// λ and the calibrated block of the matrix the model uses.
#[derive(Debug, Clone, PartialEq)]
pub struct PathCorrected {
    pub lambda: f64,
    /// |S| × |S|: Dirichlet parameters (prior/samples) or a stochastic matrix (fixed).
    pub block: Vec<Vec<f64>>,
}

/// Entry (i, j) of `λI + (1 − λ)m`, given `m[i][j]`.
fn mix_entry(lambda: f64, i: usize, j: usize, x: f64) -> f64 {
    let diagonal = if i == j { lambda } else { 0.0 };
    diagonal + (1.0 - lambda) * x
}

fn mix(lambda: f64, m: &[Vec<f64>]) -> Vec<Vec<f64>> {
    m.iter()
        .enumerate()
        .map(|(i, row)| {
            row.iter()
                .enumerate()
                .map(|(j, &x)| mix_entry(lambda, i, j, x))
                .collect()
        })
        .collect()
}

/// Does `pinv(Mᵀ) q` leave the simplex?
fn leaves_simplex(m: &[Vec<f64>], q: &[f64]) -> bool {
    let n = m.len();
    let mt: Vec<Vec<f64>> = (0..n).map(|i| (0..n).map(|j| m[j][i]).collect()).collect();
    pinv_solve(&mt, q).iter().any(|x| !(0.0..=1.0).contains(x))
}

/// Walks λ down the grid from `start` by repeated subtraction of 0.01 (R's exact doubles) and
/// returns the smallest λ before `λI + (1 − λ)m` first pushes the solution out of the simplex,
/// or the grid bottom (≈ −7.5e-16) when it never does.
fn walk_grid(start: f64, cap: f64, m: &[Vec<f64>], q: &[f64]) -> f64 {
    let mut lambda = start;
    loop {
        if leaves_simplex(&mix(lambda, m), q) {
            return (lambda + 0.01).min(cap);
        }
        if lambda.abs() < GRID_ZERO {
            return lambda;
        }
        lambda -= 0.01;
    }
}

/// `Dirichlet(α)` draws. Shapes below 1 use Gamma(a + 1)·U^{1/a} in log space, so rows with
/// tiny parameters (≈ 0.006 in CA CODE) neither underflow to zero nor lose their sum. The
/// gamma distributions are built once per row rather than once per variate (the same
/// variates).
struct DirichletDraw {
    /// Per entry: the gamma distribution drawn, and the shape when it is below 1.
    entries: Vec<(Gamma<f64>, Option<f64>)>,
}

impl DirichletDraw {
    fn new(alpha: &[f64]) -> Option<Self> {
        let entries = alpha
            .iter()
            .map(|&a| {
                if !(a.is_finite() && a > 0.0) {
                    return None;
                }
                let small = a < 1.0;
                let gamma = Gamma::new(if small { a + 1.0 } else { a }, 1.0).ok()?;
                Some((gamma, small.then_some(a)))
            })
            .collect::<Option<_>>()?;
        Some(DirichletDraw { entries })
    }

    fn sample<R: Rng + ?Sized>(&self, rng: &mut R, out: &mut [f64]) {
        for (o, (gamma, small)) in out.iter_mut().zip(&self.entries) {
            let g: f64 = gamma.sample(rng);
            *o = match small {
                Some(a) => {
                    let u: f64 = StandardUniform.sample(rng);
                    g.ln() + u.ln() / a
                }
                None => g.ln(),
            };
        }
        let max = out.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let mut sum = 0.0;
        for o in out.iter_mut() {
            *o = (*o - max).exp();
            sum += *o;
        }
        for o in out.iter_mut() {
            *o /= sum;
        }
    }
}

/// §6.1, for prior and samples: `alpha` is the |S| × |S| block of Dirichlet parameters and `q`
/// the uncalibrated CSMF renormalised over S.
pub fn path_correct_dirichlet<R: Rng + ?Sized>(
    alpha: &[Vec<f64>],
    q: &[f64],
    rng: &mut R,
) -> Result<PathCorrected, EngineError> {
    let n = alpha.len();
    // Row i of draw s is draws[(s·n + i)·n ..][..n]; rows are drawn in order, each 1000
    // times, like R.
    let row_of = |s: usize, i: usize| (s * n + i) * n;
    let mut draws = vec![0.0; PATH_DRAWS * n * n];
    for (i, row_alpha) in alpha.iter().enumerate() {
        let dirichlet = DirichletDraw::new(row_alpha).ok_or_else(|| {
            EngineError::Sampler(format!(
                "path correction: row {i} of the misclassification matrix has a parameter that \
                 is not a positive finite number"
            ))
        })?;
        for s in 0..PATH_DRAWS {
            dirichlet.sample(rng, &mut draws[row_of(s, i)..][..n]);
        }
    }
    // R walks the grid with the mean of its 1000 draws, which estimates each row's prior mean
    // α_i/Σα_i; its λ therefore varies with R's unseeded random state (e.g. 0.28, 0.29 or 0.30
    // over 30 R seeds, reference/pathcorr_rseed.json). Walking with the exact mean gives the
    // λ that R returns most often (R's most frequent λ in every recorded configuration), where
    // a second, independent set of draws would add our noise to R's. The draws still feed the
    // refit below, as in R.
    let prior_mean: Vec<Vec<f64>> = alpha
        .iter()
        .map(|row| {
            let total: f64 = row.iter().sum();
            row.iter().map(|a| a / total).collect()
        })
        .collect();
    let lambda = walk_grid(0.99, 0.99, &prior_mean, q);

    // λI + (1 − λ)·draw, in place: the refit uses only the mixed draws.
    for s in 0..PATH_DRAWS {
        for i in 0..n {
            for (j, x) in draws[row_of(s, i)..][..n].iter_mut().enumerate() {
                *x = mix_entry(lambda, i, j, *x);
            }
        }
    }
    let mixed = &draws;
    let y_bar: Vec<Vec<f64>> = (0..n)
        .map(|i| {
            (0..n)
                .map(|j| {
                    (0..PATH_DRAWS)
                        .map(|s| mixed[row_of(s, i) + j])
                        .sum::<f64>()
                        / PATH_DRAWS as f64
                })
                .collect()
        })
        .collect();
    let mut block = vec![vec![0.0; n]; n];
    for i in 0..n {
        // The mean comes from the un-nudged draws, the likelihood from the nudged ones.
        let target = -(0..PATH_DRAWS)
            .map(|s| {
                let row = &mixed[row_of(s, i)..][..n];
                let total: f64 = row.iter().map(|x| x + NUDGE).sum();
                (0..n)
                    .map(|j| y_bar[i][j] * ((row[j] + NUDGE) / total).ln())
                    .sum::<f64>()
            })
            .sum::<f64>()
            / PATH_DRAWS as f64;
        let concentration = dirichlet_concentration(&y_bar[i], target).ok_or_else(|| {
            EngineError::Sampler(format!(
                "path correction could not refit row {i} of the misclassification matrix"
            ))
        })?;
        for j in 0..n {
            block[i][j] = concentration * y_bar[i][j];
        }
    }
    Ok(PathCorrected { lambda, block })
}

/// §6.2, for fixed: `b` is the |S| × |S| block renormalised to unit rows. Deterministic.
pub fn path_correct_fixed(b: &[Vec<f64>], q: &[f64]) -> PathCorrected {
    let lambda = walk_grid(1.0, f64::INFINITY, b, q);
    PathCorrected {
        lambda,
        block: mix(lambda, b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn grid_bottom_is_the_repeated_subtraction_value() {
        // The identity keeps q in the simplex for every λ, so the walk reaches the bottom.
        let identity = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
        let corrected = path_correct_fixed(&identity, &[0.4, 0.6]);
        assert_eq!(corrected.lambda, -7.528699885739343e-16);
    }

    #[test]
    fn grid_stops_one_step_above_the_first_exit() {
        // With a strongly mixing matrix the solve leaves the simplex at some λ < 1.
        let b = vec![vec![0.5, 0.5], vec![0.5, 0.5]];
        let corrected = path_correct_fixed(&b, &[0.9025, 0.0975]);
        // x_0 = (0.9025 − (1 − λ)/2)/λ ≤ 1 iff λ ≥ 0.805: 0.80 leaves, so λ = 0.81.
        assert!(
            (corrected.lambda - 0.81).abs() < 1e-9,
            "{}",
            corrected.lambda
        );
        assert!(
            (corrected.block[0][0] - (corrected.lambda + (1.0 - corrected.lambda) * 0.5)).abs()
                < 1e-15
        );
    }

    #[test]
    fn dirichlet_draws_with_tiny_parameters_are_probability_vectors() {
        let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(3);
        let mut out = [0.0; 3];
        let dirichlet = DirichletDraw::new(&[0.006, 0.006, 5.0]).unwrap();
        for _ in 0..1000 {
            dirichlet.sample(&mut rng, &mut out);
            assert!(out.iter().all(|x| x.is_finite() && *x >= 0.0));
            assert!((out.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(DirichletDraw::new(&[1.0, bad]).is_none(), "{bad}");
        }
    }

    #[test]
    fn lambda_comes_from_the_exact_prior_mean_whatever_the_draws() {
        // The random draws must not move λ: it depends on the prior mean and q only.
        let alpha = vec![
            vec![20.0, 3.0, 2.0],
            vec![4.0, 15.0, 3.0],
            vec![2.0, 5.0, 18.0],
        ];
        let q = [0.1, 0.3, 0.6];
        let prior_mean: Vec<Vec<f64>> = alpha
            .iter()
            .map(|r| r.iter().map(|a| a / r.iter().sum::<f64>()).collect())
            .collect();
        let expected = walk_grid(0.99, 0.99, &prior_mean, &q);
        for seed in 0..5 {
            let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(seed);
            let corrected = path_correct_dirichlet(&alpha, &q, &mut rng).unwrap();
            assert_eq!(corrected.lambda, expected, "seed {seed}");
        }
        assert!(expected > 0.0 && expected < 0.99, "{expected}");
    }

    #[test]
    fn refit_recovers_the_prior_when_lambda_is_zero() {
        // q exactly reproducible by X̄ keeps λ at the bottom; the refit α should then be close
        // to the original α (relative noise of a few percent, as in R).
        let alpha = vec![
            vec![20.0, 3.0, 2.0],
            vec![4.0, 15.0, 3.0],
            vec![2.0, 5.0, 18.0],
        ];
        let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(7);
        let corrected = path_correct_dirichlet(&alpha, &[0.4, 0.3, 0.3], &mut rng).unwrap();
        assert!(corrected.lambda.abs() < 1e-8, "{}", corrected.lambda);
        for (row, row_alpha) in corrected.block.iter().zip(&alpha) {
            for (x, a) in row.iter().zip(row_alpha) {
                assert!((x / a - 1.0).abs() < 0.15, "{x} vs {a}");
            }
        }
    }
}
