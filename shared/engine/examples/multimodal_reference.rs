//! Writes `tests/fixtures/multimodal/kenya_neonate_ensemble_no_pathcorr.json`: the long-run
//! reference of the neonatal Kenya ensemble posterior mean without path correction, a bimodal
//! posterior ("sepsis high" / "pneumonia high") on which single NUTS or Gibbs chains stick to
//! one mode. The method is data-fraction parallel tempering on the Gibbs sampler
//! (`vacal_engine::reference_tools`).
//!
//! `cargo run -p vacal-engine --features reference-tools --example multimodal_reference`
//!
//! Optional `name=value` arguments override the settings (chains, levels, power, warmup,
//! rounds, thin, batches, seed, threads) and `out=PATH` the output file, for exploring; the
//! fixture records the exact command that made it.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::{json, Value};
use vacal_core::request::parse_request;
use vacal_engine::reference_tools::{ensemble_reference, TemperingSettings};

/// The rules of 2.2, with which the stored fixture was made (before the 2.3.1 rules existed).
const REQUEST: &str = r#"{"va_data":{"eava":"use_example","insilicova":"use_example","interva":"use_example"},"age_group":"neonate","country":"Kenya","path_correction":false,"rules":"2.2","mcmc":{"seed":1}}"#;

const BASE_COMMAND: &str =
    "cargo run -p vacal-engine --features reference-tools --example multimodal_reference";

const MODES: [&str; 2] = ["sepsis_high", "pneumonia_high"];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut settings = TemperingSettings {
        // 24 independent ladders of 25 replicas, ~4.9M rounds in all: about 20 CPU minutes
        // for an MCSE near 0.001 on pneumonia and sepsis, whose posterior sd is about 0.3.
        chains: 24,
        levels: 24,
        power: 2.0,
        warmup_rounds: 5_000,
        rounds: 200_000,
        thin: 10,
        batches_per_chain: 25,
        seed: 20_250_601,
        threads: None,
    };
    let mut out = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/multimodal/kenya_neonate_ensemble_no_pathcorr.json");
    for arg in &args {
        let (name, value) = arg
            .split_once('=')
            .unwrap_or_else(|| panic!("arguments are name=value, got {arg}"));
        let int = || -> usize { value.parse().unwrap_or_else(|e| panic!("{arg}: {e}")) };
        match name {
            "chains" => settings.chains = int(),
            "levels" => settings.levels = int(),
            "power" => settings.power = value.parse().expect("power is a number"),
            "warmup" => settings.warmup_rounds = int(),
            "rounds" => settings.rounds = int(),
            "thin" => settings.thin = int(),
            "batches" => settings.batches_per_chain = int(),
            "seed" => settings.seed = int() as u64,
            "threads" => settings.threads = Some(int()),
            "out" => out = PathBuf::from(value),
            _ => panic!("unknown setting {name}"),
        }
    }

    let body: Value = serde_json::from_str(REQUEST).expect("request is JSON");
    let request = parse_request(&body).expect("valid request");
    let started = Instant::now();
    let cpu_started = cpu_seconds();
    let pneumonia = 1;
    let sepsis = 2;
    // The two modes put the calibrated mass of pneumonia and sepsis the other way round.
    let mode_of = |draw: &[f64]| usize::from(draw[pneumonia] > draw[sepsis]);
    let reference =
        ensemble_reference(&request, &settings, MODES.len(), &mode_of).expect("reference runs");
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds()
        .zip(cpu_started)
        .map(|(end, start)| end - start);
    assert_eq!(reference.causes[pneumonia], "pneumonia");
    assert_eq!(reference.causes[sepsis], "sepsis_meningitis_inf");

    let command = std::iter::once(BASE_COMMAND.to_string())
        .chain((!args.is_empty()).then(|| format!("-- {}", args.join(" "))))
        .collect::<Vec<_>>()
        .join(" ");
    let fixture = json!({
        "request": body,
        "method": "Parallel tempering over data fractions on the engine's data-augmentation \
                   Gibbs sampler (reference_tools.rs): replica l targets prior x likelihood of \
                   the counts round(t_l a), t_l = (l/levels)^power from the prior to the \
                   posterior; one Gibbs sweep per replica per round, then even/odd swaps of the \
                   (p, M) states between neighbours with probability \
                   min(1, L(y; n_a) L(x; n_b) / (L(x; n_a) L(y; n_b))). The ensemble model is \
                   built exactly as calibrate builds it; `mean` is the reported calibrated \
                   ensemble mean (D p_j / sum_S p over S_ens, pooled share elsewhere) over the \
                   kept posterior-replica draws of all chains; `mcse` is from batch means over \
                   every chain's batches.",
        "command": command,
        "causes": reference.causes,
        "mean": reference.mean,
        "mcse": reference.mcse,
        "mcse_batch_means": reference.mcse_batch_means,
        "mcse_between_chains": reference.mcse_between_chains,
        "mode_weights": MODES.iter().zip(&reference.mode_weights)
            .map(|(m, w)| (m.to_string(), json!(w))).collect::<serde_json::Map<_, _>>(),
        "mode_weights_mcse": MODES.iter().zip(&reference.mode_weights_mcse)
            .map(|(m, w)| (m.to_string(), json!(w))).collect::<serde_json::Map<_, _>>(),
        "mode_rule": "pneumonia_high when the reported pneumonia share exceeds sepsis_meningitis_inf's",
        "mode_changes": reference.mode_changes,
        "chain_means": reference.chain_means,
        "rhat": reference.rhat.iter().map(|r| if r.is_nan() { Value::Null } else { json!(r) }).collect::<Vec<_>>(),
        "ess_bulk": reference.ess_bulk.iter().map(|r| if r.is_nan() { Value::Null } else { json!(r) }).collect::<Vec<_>>(),
        "settings": {
            "chains": settings.chains,
            "levels": settings.levels,
            "power": settings.power,
            "warmup_rounds": settings.warmup_rounds,
            "rounds": settings.rounds,
            "thin": settings.thin,
            "batches_per_chain": settings.batches_per_chain,
            "seed": settings.seed,
        },
        "fractions": reference.fractions,
        "swap_rates": reference.swap_rates,
        "draws": reference.draws,
        "sweeps": reference.sweeps,
        "seconds": seconds,
        "cpu_seconds": cpu,
    });
    let text = serde_json::to_string_pretty(&fixture).expect("serialises") + "\n";
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).expect("output directory");
    }
    std::fs::write(&out, text).expect("writes the fixture");

    println!("wrote {}", out.display());
    println!(
        "{:<25} {:>8} {:>8} {:>8} {:>8}",
        "cause", "mean", "mcse", "batches", "chains"
    );
    for (j, c) in reference.causes.iter().enumerate() {
        println!(
            "{c:<25} {:>8.4} {:>8.4} {:>8.4} {:>8.4}",
            reference.mean[j],
            reference.mcse[j],
            reference.mcse_batch_means[j],
            reference.mcse_between_chains[j]
        );
    }
    println!(
        "mode weights {:?} ± {:?}, {} mode changes",
        reference.mode_weights, reference.mode_weights_mcse, reference.mode_changes
    );
    println!("swap rates {:.2?}", reference.swap_rates);
    println!("rhat {:.3?}", reference.rhat);
    println!("{seconds:.0} s wall, {cpu:?} s CPU");
}

/// CPU time of this process (all threads) from /proc, where there is one.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // utime and stime are fields 14 and 15; the command name (field 2) may hold spaces but
    // ends with the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}
