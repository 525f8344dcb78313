//! vacal-engine: a native implementation of `vacalibration()` from the R package
//! vacalibration 2.2 (calibration-model.md), pure and synchronous: no I/O, no async.
//!
//! `CalibrationRequest::from_json` reads a request and `calibrate` runs it into a typed
//! `Calibration`; the service renders that as the API's result (vacal-core's `result`).

pub mod calibrate;
pub mod data;
mod density;
pub mod diagnostics;
pub mod error;
mod gibbs;
mod independence;
mod mcmc;
mod model;
mod numeric;
mod nuts;
mod pathcorr;
pub mod prepare;
pub mod request;
#[cfg(test)]
mod samplers_agree;

pub use calibrate::{calibrate, Calibration, Diagnostics, NoProgress, Progress, RowResult};
pub use data::AgeGroup;
pub use error::EngineError;
pub use request::CalibrationRequest;

/// Version of the engine, part of every cache key.
pub const ENGINE_VERSION: &str = concat!("vacal-engine ", env!("CARGO_PKG_VERSION"));
