//! Every R reference case once at default settings: wall time, minimum bulk ESS and ESS per
//! second, beside the R package's recorded wall time and ESS. Prints a Markdown table.
//! `cargo bench -p vacal-engine --bench ess`

#[path = "../tests/common/reference.rs"]
mod reference;

use std::time::Instant;

use vacal_core::request::parse_request;
use vacal_engine::{calibrate, NoProgress};

fn main() {
    println!("| case | row | sampler | vacal ms | vacal min ESS | vacal ESS/s | R s (whole call) | R min ESS | R ESS/s | wall speed-up |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (name, run) in reference::reference_runs() {
        let request = parse_request(&reference::request_for(&run)).unwrap();
        let started = Instant::now();
        let calibration = calibrate(&request, &NoProgress).expect("calibrates");
        let wall = started.elapsed().as_secs_f64();
        let r_wall = run["timing"]["wall_seconds_total"].as_f64().unwrap();
        let n_mcmc = run["inputs"]["nMCMC"].as_f64().unwrap();
        for row in &calibration.rows {
            let Some(d) = &row.diagnostics else { continue };
            let r = &run["mcmc"][&row.name];
            let r_ess = r["min_ess_bulk_fraction"].as_f64().unwrap_or(f64::NAN) * n_mcmc;
            let r_seconds = r["stan_warmup_seconds"].as_f64().unwrap_or(f64::NAN)
                + r["stan_sampling_seconds"].as_f64().unwrap_or(f64::NAN);
            println!(
                "| {name} | {} | {} | {:.0} | {:.0} | {:.0} | {:.1} | {:.0} | {:.0} | {:.0}× |",
                row.name,
                d.sampler,
                d.seconds * 1e3,
                d.min_ess_bulk,
                d.min_ess_bulk / d.seconds,
                r_wall,
                r_ess,
                r_ess / r_seconds,
                r_wall / wall,
            );
        }
    }
}
