//! Lambda entry point of the API: clients built once per init, then every event through
//! the router.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    vacal_aws::init_lambda_tracing();
    let started = std::time::Instant::now();
    let service = vacal_api::service_from_env().await?;
    tracing::info!(
        init_ms = started.elapsed().as_millis() as u64,
        "initialised"
    );
    lambda_http::run(vacal_http::router(service)).await
}
