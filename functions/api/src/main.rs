//! Lambda entry point of the API: clients built once per init, then every event through
//! the router.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    // The runtime's own subscriber: level from AWS_LAMBDA_LOG_LEVEL (the template's LogLevel),
    // then RUST_LOG; JSON when AWS_LAMBDA_LOG_FORMAT is JSON (the template's LoggingConfig).
    lambda_http::tracing::init_default_subscriber();
    let started = std::time::Instant::now();
    let service = vacal_api::service_from_env().await?;
    tracing::info!(
        init_ms = started.elapsed().as_millis() as u64,
        "initialised"
    );
    lambda_http::run(vacal_http::router(service)).await
}
