//! vacal-engine: a native implementation of `vacalibration()` from the R package
//! vacalibration 2.2.

pub mod density;
pub mod diagnostics;
pub mod gibbs;
pub mod mcmc;
pub mod model;
pub mod nuts;
