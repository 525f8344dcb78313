//! Lambda entry point of the janitor (an EventBridge schedule): clients built once per
//! init, then one pass per invocation. The event's content is not used.

use lambda_runtime::{service_fn, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    vacal_aws::init_lambda_tracing();
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
