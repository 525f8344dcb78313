//! What the minimum bulk ESS of exactly independent draws is, beside every R reference row's
//! recorded figure: R computes its figure on shuffled (so independent) draws, and the minimum
//! over a fit's causes of a noisy estimate spreads by a few hundred around 0.94 × the draws.
//! For each row, the distribution of that minimum over `REPLICATES` sets of independent
//! Dirichlet draws in vacal's layout (4 chains × 1,250) and R's (1 chain × 5,000), with the
//! fraction of sets that reach R's figure. Prints a Markdown table.
//! `cargo bench -p vacal-engine --bench independent_ess`

#[path = "../tests/common/reference.rs"]
mod reference;

use std::collections::BTreeMap;

use rand::rngs::ChaCha8Rng;
use rand::SeedableRng;
use rand_distr::{Distribution, Gamma};
use vacal_core::request::parse_request;
use vacal_engine::diagnostics::{diagnose_samples, quantile, ChainDraws, Samples};
use vacal_engine::request::MmatType;
use vacal_engine::{calibrate, NoProgress};

const REPLICATES: usize = 1000;
const DRAWS: usize = 5000;

/// Minimum bulk ESS over `coordinates` causes of independent draws, one per replicate.
/// Bulk ESS is rank-based, so the shape of the marginals does not matter; a Dirichlet keeps
/// the draws on a simplex like the posterior's.
fn independent_min_ess(coordinates: usize, chains: usize, seed: u64) -> Vec<f64> {
    let shape = Gamma::new(50.0, 1.0).expect("valid shape");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..REPLICATES)
        .map(|_| {
            let chains = (0..chains)
                .map(|_| ChainDraws {
                    draws: (0..DRAWS / chains)
                        .map(|_| {
                            let g: Vec<f64> =
                                (0..coordinates).map(|_| shape.sample(&mut rng)).collect();
                            let total: f64 = g.iter().sum();
                            g.iter().map(|x| x / total).collect()
                        })
                        .collect(),
                    divergences: 0,
                    max_depth_hits: 0,
                })
                .collect();
            diagnose_samples(&Samples { chains }).min_ess_bulk
        })
        .collect()
}

fn share_at_least(values: &[f64], x: f64) -> f64 {
    values.iter().filter(|&&m| m >= x).count() as f64 / values.len() as f64
}

fn main() {
    let mut cache: BTreeMap<(usize, usize), Vec<f64>> = BTreeMap::new();
    println!(
        "| case | row | causes | R min ESS | independent, 4 × 1,250: median (5–95 %) | reach R's | \
         independent, 1 × 5,000: median (5–95 %) | reach R's |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, run) in reference::reference_runs() {
        let request = parse_request(&reference::request_for(&run)).unwrap();
        let calibration = calibrate(&request, &NoProgress).expect("calibrates");
        let n_mcmc = run["inputs"]["nMCMC"].as_f64().unwrap();
        assert_eq!(
            n_mcmc as usize, DRAWS,
            "{name}: the table assumes 5,000 draws"
        );
        for row in &calibration.rows {
            if row.diagnostics.is_none() {
                continue;
            }
            let r_ess = run["mcmc"][&row.name]["min_ess_bulk_fraction"]
                .as_f64()
                .unwrap_or(f64::NAN)
                * n_mcmc;
            // The sampled causes: prior ensembles sample p over every cause.
            let coordinates = if row.name == "ensemble" && calibration.mmat_type != MmatType::Fixed
            {
                calibration.causes.len()
            } else {
                row.calibrated_causes.iter().filter(|&&c| c).count()
            };
            let mut cells = String::new();
            for chains in [4, 1] {
                let mins = cache.entry((coordinates, chains)).or_insert_with(|| {
                    independent_min_ess(coordinates, chains, (coordinates * 10 + chains) as u64)
                });
                cells.push_str(&format!(
                    " {:.0} ({:.0}–{:.0}) | {:.0} % |",
                    quantile(mins, 0.5),
                    quantile(mins, 0.05),
                    quantile(mins, 0.95),
                    100.0 * share_at_least(mins, r_ess),
                ));
            }
            println!(
                "| {name} | {} | {coordinates} | {r_ess:.0} |{cells}",
                row.name
            );
        }
    }
}
