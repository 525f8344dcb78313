//! Lambda entry point of the worker: clients built once per init, then every SQS batch
//! through the handler.

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{service_fn, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    // The runtime's own subscriber: level from AWS_LAMBDA_LOG_LEVEL (the template's LogLevel),
    // then RUST_LOG; JSON when AWS_LAMBDA_LOG_FORMAT is JSON (the template's LoggingConfig).
    lambda_runtime::tracing::init_default_subscriber();
    let started = std::time::Instant::now();
    let handler = vacal_worker::Handler::from_env().await?;
    tracing::info!(
        init_ms = started.elapsed().as_millis() as u64,
        "initialised"
    );
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let handler = handler.clone();
        async move { Ok::<_, lambda_runtime::Error>(handler.batch(event.payload).await) }
    }))
    .await
}
