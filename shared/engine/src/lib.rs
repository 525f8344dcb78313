//! vacal-engine: a native implementation of `vacalibration()` from the R package
//! vacalibration 2.2 (calibration-model.md), pure and synchronous: no I/O, no async.
//!
//! `calibrate` runs a typed `CalibrationRequest` into a typed `Calibration`. The engine knows
//! no JSON body: the service reads requests (vacal-core's `request`) and renders results
//! (vacal-core's `result`).
//!
//! Public: `calibrate` with its result types, the request and its input types (`request`),
//! the bundled CHAMPS data (`data`), the preparation of inputs into counts (`prepare`, which
//! the service runs to validate a job before queueing it), MCMC settings and `diagnostics`.
//! The model, the samplers, path correction and the numerics are private.
//!
//! With the `reference-tools` feature (off by default, never enabled by the service),
//! `reference_tools` adds long-run reference computations for checking the samplers.

mod calibrate;
pub mod data;
mod density;
pub mod diagnostics;
mod error;
mod gibbs;
mod independence;
mod mcmc;
mod model;
mod numeric;
mod nuts;
mod pathcorr;
pub mod prepare;
#[cfg(any(test, feature = "reference-tools"))]
pub mod reference_tools;
pub mod request;
#[cfg(test)]
mod samplers_agree;
mod tempering;

pub use calibrate::{
    calibrate, mcmc_settings, Calibration, Diagnostics, NoProgress, PathCorrection, Progress,
    RowResult, STALL_SHARE_BELOW,
};
pub use data::AgeGroup;
pub use error::{panic_message, EngineError};
pub use mcmc::McmcSettings;
pub use request::CalibrationRequest;

/// Version of the engine, part of every cache key.
pub const ENGINE_VERSION: &str = concat!("vacal-engine ", env!("CARGO_PKG_VERSION"));
