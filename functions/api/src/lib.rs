//! The API Lambda: every `/api/v1` route of `vacal_http::router` behind API Gateway (HTTP
//! API, payload v2) or a function URL. `lambda_http` turns the event into an HTTP request
//! (decoding a base64 body), the router answers it as in local mode.

use std::sync::Arc;

use vacal_core::JobService;

/// The job service on DynamoDB, SQS and S3, configured from the environment (the
/// resources' variables and the service's own, such as `CACHE_TTL`).
pub async fn service_from_env() -> Result<Arc<JobService>, String> {
    let deployment = vacal_aws::Deployment::from_env().await?;
    Ok(Arc::new(JobService::new(
        deployment.ports,
        deployment.config,
    )))
}
