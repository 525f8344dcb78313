//! `vacal calibrate`: the engine on one request, validated as the API validates it, with no
//! service involved.

use std::io::{Read, Write};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde_json::{json, Value};
use vacal_contract::CalibrationOutput;
use vacal_core::result::calibration_output;
use vacal_core::validation::validate_job_request;
use vacal_core::Config;
use vacal_engine::{calibrate, EngineError, NoProgress};

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Json,
    Table,
}

#[derive(Args)]
pub struct CalibrateArgs {
    /// Request file (the body of POST /api/v1/calibrate/async), or - for standard input.
    #[arg(long, conflicts_with = "example", required_unless_present = "example")]
    request: Option<String>,
    /// Calibrate the bundled COMSA-Mozambique example instead of a request file.
    #[arg(long)]
    example: bool,
    /// Age group of the example.
    #[arg(long, default_value = "neonate", requires = "example")]
    age_group: String,
    /// Country whose CHAMPS matrices calibrate the example.
    #[arg(long, default_value = "Mozambique", requires = "example")]
    country: String,
    /// Algorithms of the example (comma separated: eava, insilicova, interva).
    #[arg(
        long,
        default_value = "insilicova",
        value_delimiter = ',',
        requires = "example"
    )]
    algorithm: Vec<String>,
    /// Misclassification type of the example: prior or fixed.
    #[arg(long, default_value = "prior", requires = "example")]
    mmat_type: String,
    /// Rules of the example: vacalibration 2.3.1 or 2.2.
    #[arg(long, default_value = "2.3.1", requires = "example")]
    rules: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
}

fn read_request(path: &str) -> Result<Value, String> {
    let text = if path == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        s
    } else {
        std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?
    };
    serde_json::from_str(&text).map_err(|e| format!("the request is not valid JSON: {e}"))
}

fn example_request(args: &CalibrateArgs) -> Value {
    let va_data: serde_json::Map<String, Value> = args
        .algorithm
        .iter()
        .map(|a| (a.clone(), json!("use_example")))
        .collect();
    json!({
        "va_data": va_data,
        "age_group": args.age_group,
        "country": args.country,
        "mmat_type": args.mmat_type,
        "rules": args.rules,
    })
}

pub fn run(args: CalibrateArgs) -> ExitCode {
    let body = match &args.request {
        Some(path) => match read_request(path) {
            Ok(body) => body,
            Err(message) => {
                eprintln!("error: {message}");
                return ExitCode::from(2);
            }
        },
        None => example_request(&args),
    };
    // The API's own validation, so that a request file means here what it means to the
    // service: the same defaults, rules and messages, and the same result.
    let valid = match validate_job_request(&body, &Config::default(), "") {
        Ok(valid) => valid,
        Err(e) => {
            eprintln!("error: invalid request: {}", e.detail());
            return ExitCode::from(2);
        }
    };
    match calibrate(&valid.request, &NoProgress) {
        Ok(calibration) => {
            let result = calibration_output(&valid.request, &calibration);
            let text = match args.format {
                Format::Json => {
                    serde_json::to_string_pretty(&result).expect("result serialises") + "\n"
                }
                Format::Table => table(&result),
            };
            write_stdout(&text)
        }
        Err(e @ EngineError::Invalid { .. }) => {
            eprintln!("error: invalid request: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes the result; a reader that stops early (`vacal calibrate … | head`) closes the pipe,
/// which ends the output without an error rather than a panic from `println!`.
fn write_stdout(text: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write the result: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A share as a percentage; "-" where it could not be computed.
fn pct(x: f64) -> String {
    if x.is_finite() {
        format!("{:.1}", 100.0 * x)
    } else {
        "-".into()
    }
}

/// A terminal table: per row (algorithm or ensemble), each cause's uncalibrated and
/// calibrated percentage with the 95 % interval.
pub fn table(result: &CalibrationOutput) -> String {
    let causes = &result.causes;
    let width = causes.iter().map(|c| c.len()).max().unwrap_or(5).max(5);
    let mut out = String::new();
    let settings = &result.settings;
    out.push_str(&format!(
        "{}  age group: {}  country: {}  matrices: {} ({})  rules: {}\n",
        result.engine_version,
        settings["age_group"].as_str().unwrap_or("-"),
        settings["country"].as_str().unwrap_or("-"),
        settings["mmat_type"].as_str().unwrap_or("-"),
        settings["matrix_country"].as_str().unwrap_or("user"),
        settings["rules"].as_str().unwrap_or("-"),
    ));
    for (name, calibrated) in &result.calibrated {
        out.push('\n');
        out.push_str(name);
        match result.diagnostics.get(name).and_then(Option::as_ref) {
            None => out.push_str("  (not calibrated: fewer than 2 causes to calibrate)"),
            Some(diagnostics) => {
                if let Some(l) = result.lambda.get(name).copied().flatten() {
                    out.push_str(&format!("  λ {:.2}", l.max(0.0)));
                }
                if let Some(Some(pc)) = result.path_correction.get(name) {
                    if pc.stalled {
                        out.push_str(" (stalled)");
                    }
                }
                out.push_str(&format!(
                    "  R-hat {:.3}  bulk ESS {:.0}  divergences {}  {:.3} s",
                    diagnostics.max_rhat.unwrap_or(f64::NAN),
                    diagnostics.min_ess_bulk.unwrap_or(f64::NAN),
                    diagnostics.divergences,
                    diagnostics.seconds,
                ));
            }
        }
        out.push('\n');
        out.push_str(&format!(
            "  {:<width$}  {:>12}  {:>10}  {:>17}\n",
            "cause", "uncalibrated", "calibrated", "95% interval"
        ));
        let kept = result.calibrated_causes.get(name);
        let uncalibrated = result.uncalibrated.get(name);
        for (j, cause) in causes.iter().enumerate() {
            let marker = if kept.and_then(|k| k.get(j)) == Some(&false) {
                " (kept)"
            } else {
                ""
            };
            let share =
                |v: Option<&Vec<f64>>| pct(v.and_then(|v| v.get(j)).copied().unwrap_or(f64::NAN));
            out.push_str(&format!(
                "  {:<width$}  {:>11}%  {:>9}%  [{:>6}, {:>6}]{marker}\n",
                cause,
                share(uncalibrated),
                share(Some(&calibrated.mean)),
                share(Some(&calibrated.lower_ci)),
                share(Some(&calibrated.upper_ci)),
            ));
        }
    }
    if !result.warnings.is_empty() {
        out.push('\n');
        for warning in &result.warnings {
            out.push_str(&format!("warning: {warning}\n"));
        }
    }
    out
}
