pub mod reference;

use serde_json::Value;
use vacal_engine::{calibrate, result_json, CalibrationRequest, NoProgress};

/// The result object of a request, as `vacal calibrate` prints it.
#[allow(dead_code)]
pub fn result_of(body: &Value) -> Value {
    let request = CalibrationRequest::from_json(body).expect("valid request");
    let calibration = calibrate(&request, &NoProgress).expect("calibrates");
    result_json(&request, &calibration)
}
