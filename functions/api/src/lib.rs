//! The API Lambda: every `/api/v1` route of `vacal_http::router` behind API Gateway (HTTP
//! API, payload v2) or a function URL. `lambda_http` turns the event into an HTTP request
//! (decoding a base64 body), the router answers it as in local mode.

use std::sync::Arc;

use vacal_core::{Config, JobService};

/// Structured logs to stderr (CloudWatch), level from `RUST_LOG` (default info).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time() // CloudWatch stamps every line
        .init();
}

/// The job service on DynamoDB, SQS and S3, configured from the environment (the
/// resources' variables and the service's own, such as `CACHE_TTL`).
pub async fn service_from_env() -> Result<Arc<JobService>, String> {
    let config = Config::from_env().map_err(|e| e.to_string())?;
    let env = vacal_aws::AwsEnv::from_env().map_err(|e| e.to_string())?;
    let clients = vacal_aws::Clients::from_env().await;
    let ports = vacal_aws::ports(&clients, &env, &config);
    Ok(Arc::new(JobService::new(ports, config)))
}
