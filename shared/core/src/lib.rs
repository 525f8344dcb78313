//! vacal-core: the job service of vacal, independent of where it runs. Domain types and
//! their state machine, request validation and cache keys, the ports a deployment provides,
//! and the use cases over them: `JobService` (the API), `Worker` (running jobs) and
//! `Janitor` (timeouts, stuck leases, batch repair).

pub mod config;
pub mod domain;
pub mod ports;
pub mod validation;

pub use config::Config;
