pub mod reference;

use serde_json::Value;
use vacal_core::request::parse_request;
use vacal_engine::{calibrate, Calibration, NoProgress, RowResult};

/// The calibration of a request body.
#[allow(dead_code)]
pub fn result_of(body: &Value) -> Calibration {
    let request = parse_request(body).expect("valid request");
    calibrate(&request, &NoProgress).expect("calibrates")
}

/// A calibration's output rows and per-algorithm values by name.
#[allow(dead_code)]
pub trait ByName {
    fn row(&self, name: &str) -> &RowResult;
    fn lambda_of(&self, algorithm: &str) -> Option<f64>;
    fn deaths_of(&self, algorithm: &str) -> &[f64];
    fn ensemble_deaths_of(&self, algorithm: &str) -> &[f64];
}

fn index_of(calibration: &Calibration, algorithm: &str) -> usize {
    calibration
        .algorithms
        .iter()
        .position(|a| a == algorithm)
        .unwrap_or_else(|| panic!("no algorithm {algorithm}"))
}

impl ByName for Calibration {
    fn row(&self, name: &str) -> &RowResult {
        self.rows
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no row {name}"))
    }

    fn lambda_of(&self, algorithm: &str) -> Option<f64> {
        self.lambda[index_of(self, algorithm)]
    }

    fn deaths_of(&self, algorithm: &str) -> &[f64] {
        &self.deaths_calibrated[index_of(self, algorithm)]
    }

    fn ensemble_deaths_of(&self, algorithm: &str) -> &[f64] {
        let ensemble = self
            .deaths_calibrated_ensemble
            .as_ref()
            .expect("an ensemble ran");
        &ensemble[index_of(self, algorithm)]
    }
}
