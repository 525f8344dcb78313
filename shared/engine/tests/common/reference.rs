//! Reads the R reference runs in `tests/fixtures/reference` and turns their `inputs` into
//! calibration requests. Shared by the parity tests and the benchmarks.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference")
}

/// Every reference run: (file stem, parsed JSON), sorted by name.
pub fn reference_runs() -> Vec<(String, Value)> {
    let mut runs: Vec<(String, Value)> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures directory exists")
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_stem()?.to_str()?.to_string();
            if !name.contains("__r") {
                return None;
            }
            let text = std::fs::read_to_string(&path).ok()?;
            Some((name, serde_json::from_str(&text).expect("fixture is JSON")))
        })
        .collect();
    runs.sort_by(|a, b| a.0.cmp(&b.0));
    runs
}

/// The reference run with file stem `name`.
pub fn reference_run(name: &str) -> Value {
    let path = fixtures_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn va_input(spec: &Value) -> Value {
    match spec["kind"].as_str().expect("va_data kind") {
        "ccva_output_reference" => json!("use_example"),
        "count_vector" => spec["counts"].clone(),
        "binary_matrix" => json!({"causes": spec["colnames"], "rows": spec["rows"]}),
        other => panic!("unknown va_data kind {other}"),
    }
}

fn missmat(spec: &Value) -> Value {
    match spec["kind"].as_str().expect("missmat kind") {
        "prior" | "fixed" => json!({"matrix": spec["matrix"]}),
        "samples" => {
            assert_eq!(spec["rownames"], spec["colnames"]);
            json!({"causes": spec["rownames"], "samples": spec["samples"]})
        }
        other => panic!("unknown missmat kind {other}"),
    }
}

/// The request that reproduces a reference run's `vacalibration()` call. The runs were made
/// with vacalibration 2.2, so the request asks for its rules.
pub fn request_for(run: &Value) -> Value {
    let inputs = &run["inputs"];
    let map_values = |v: &Value, f: &dyn Fn(&Value) -> Value| -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), f(v)))
                    .collect::<Map<_, _>>(),
            ),
            _ => Value::Null,
        }
    };
    json!({
        "va_data": map_values(&inputs["va_data"], &va_input),
        "age_group": inputs["age_group"],
        "country": inputs["country"],
        "mmat_type": inputs["missmat_type"],
        "ensemble": inputs["ensemble"],
        "missmat": map_values(&inputs["missmat"], &missmat),
        "studycause_map": inputs["studycause_map"],
        "donotcalib": inputs["donotcalib"],
        "donotcalib_type": inputs["donotcalib_type"],
        "nocalib_threshold": inputs["nocalib.threshold"],
        "path_correction": inputs["path_correction"],
        "pshrink_strength": inputs["pshrink_strength"],
        "rules": "2.2",
        "mcmc": {
            "n_mcmc": inputs["nMCMC"],
            "n_burn": inputs["nBurn"],
            "n_thin": inputs["nThin"],
            "seed": inputs["seed"],
        },
    })
}
