//! Lambda entry point of the janitor (an EventBridge schedule): clients built once per
//! init, then one pass per invocation. The event's content is not used.

use lambda_runtime::{service_fn, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    // The runtime's own subscriber: level from AWS_LAMBDA_LOG_LEVEL (the template's LogLevel),
    // then RUST_LOG; JSON when AWS_LAMBDA_LOG_FORMAT is JSON (the template's LoggingConfig).
    lambda_runtime::tracing::init_default_subscriber();
    let started = std::time::Instant::now();
    let handler = vacal_janitor::Handler::from_env().await?;
    tracing::info!(
        init_ms = started.elapsed().as_millis() as u64,
        "initialised"
    );
    lambda_runtime::run(service_fn(move |_: LambdaEvent<serde_json::Value>| {
        let handler = handler.clone();
        async move { handler.run().await.map_err(lambda_runtime::Error::from) }
    }))
    .await
}
