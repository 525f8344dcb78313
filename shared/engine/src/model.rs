//! The posterior of calibration-model.md §7 as plain data, shared by every sampler.
//!
//! The parameter is a CSMF `p` on a simplex of dimension `d`, and for every algorithm term with
//! a Dirichlet misclassification prior, one probability row per calibrated cause. Samplers only
//! report `p`; the rows are nuisance parameters.

/// How one algorithm's misclassification matrix enters the model.
#[derive(Debug, Clone, PartialEq)]
pub enum Misclassification {
    /// Row `i` of the matrix is `θ[i]`, a probability vector over the calibrated causes with
    /// prior `Dirichlet(alpha[i][j] for calibrated j)`, for every calibrated `i`. Rows of
    /// uncalibrated causes are identity rows. `alpha` is `d × d`; entries outside the
    /// calibrated block are ignored.
    Dirichlet(Vec<Vec<f64>>),
    /// A fixed `d × d` row-stochastic matrix, used as given (identity rows where needed).
    Fixed(Vec<Vec<f64>>),
}

/// One algorithm's contribution to the likelihood:
/// `counts ~ Multinomial(Σ counts, Mᵀ p)`, i.e. `P(VA cause j) = Σ_i p_i M[i][j]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AlgorithmTerm {
    /// Deaths per VA cause, length `d`.
    pub counts: Vec<f64>,
    /// `calibrated[j]`: cause `j` is in this algorithm's calibrated set S_k. Only used with
    /// `Misclassification::Dirichlet` (for `Fixed` the matrix already carries identity rows).
    /// For a cause outside S_k, `P(VA cause j) = p_j`.
    pub calibrated: Vec<bool>,
    pub misclassification: Misclassification,
}

/// The full posterior: `p ~ Dirichlet(p_prior)` times the likelihood of every term.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// Dirichlet parameters of `p`, length `d ≥ 2`, all strictly positive.
    pub p_prior: Vec<f64>,
    pub terms: Vec<AlgorithmTerm>,
}

impl ModelSpec {
    pub fn dim(&self) -> usize {
        self.p_prior.len()
    }

    /// The same posterior with the causes relabelled: cause `order[k]` of `self` is cause `k` of
    /// the result. `order` is a permutation of `0..dim()`, and every vector and matrix of the
    /// spec has length `dim()`.
    pub fn relabelled(&self, order: &[usize]) -> ModelSpec {
        let pick = |v: &[f64]| -> Vec<f64> { order.iter().map(|&j| v[j]).collect() };
        let pick_matrix =
            |m: &[Vec<f64>]| -> Vec<Vec<f64>> { order.iter().map(|&i| pick(&m[i])).collect() };
        ModelSpec {
            p_prior: pick(&self.p_prior),
            terms: self
                .terms
                .iter()
                .map(|t| AlgorithmTerm {
                    counts: pick(&t.counts),
                    calibrated: order.iter().map(|&j| t.calibrated[j]).collect(),
                    misclassification: match &t.misclassification {
                        Misclassification::Dirichlet(m) => {
                            Misclassification::Dirichlet(pick_matrix(m))
                        }
                        Misclassification::Fixed(m) => Misclassification::Fixed(pick_matrix(m)),
                    },
                })
                .collect(),
        }
    }
}
