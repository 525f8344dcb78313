//! vacal-core: the job service of vacal, independent of where it runs. Domain types and
//! their state machine, request validation and cache keys, the ports a deployment provides,
//! and the use cases over them: `JobService` (the API), `Worker` (running jobs) and
//! `Janitor` (timeouts, stuck leases, batch repair).

pub mod config;
#[cfg(feature = "testing")]
pub mod conformance;
pub mod domain;
pub mod export;
pub mod janitor;
pub mod ports;
pub mod preview;
pub mod reference;
pub mod request;
pub mod result;
pub mod service;
pub mod upload;
pub mod validation;
pub mod worker;

pub use config::Config;
pub use janitor::Janitor;
pub use service::{JobService, Ports, ServiceError};
pub use worker::Worker;
