//! The port conformance suite of vacal-core against the DynamoDB, SQS and S3 adapters, on an
//! emulator named by `AWS_ENDPOINT_URL` (moto; LocalStack works too). Every check gets its
//! own table, queues and bucket, so checks never see each other's data.
//!
//! Run: `bash tests/aws/emulator.sh cargo test -p vacal-aws`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use vacal_aws::provision::{create_all, require_loopback_endpoint};
use vacal_aws::{Clients, DynamoStore, S3Results, SqsQueue};
use vacal_core::conformance::{self, Adapters, SuiteConfig};

/// A prefix no other test run shares (names must be unique within one emulator).
fn unique_prefix(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "vc-{tag}-{}-{:08x}-{}",
        std::process::id(),
        nanos,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn fresh_adapters(clients: &Clients, tag: &str) -> Adapters {
    let env = create_all(clients, &unique_prefix(tag), 30)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot create the test resources on the emulator: {}",
                aws_sdk_error_chain(&*e)
            )
        });
    let store = Arc::new(DynamoStore::new(
        clients.dynamodb.clone(),
        &env.jobs_table,
        Duration::from_secs(86_400),
    ));
    Adapters {
        jobs: store,
        queue: Arc::new(SqsQueue::new(clients.sqs.clone(), env.queues)),
        results: Arc::new(S3Results::new(clients.s3.clone(), &env.results_bucket)),
    }
}

fn aws_sdk_error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.join(": ")
}

async fn clients() -> Clients {
    if let Err(why) = require_loopback_endpoint() {
        panic!("{why}");
    }
    Clients::for_emulator().await
}

/// SQS counts whole seconds and gives no order within a queue, and a stale receipt handle
/// may still settle its message: the suite's lenient queue mode with a 1 s tick.
fn sqs_config() -> SuiteConfig {
    SuiteConfig {
        tick: Duration::from_secs(1),
        strict_queue: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_store_passes_the_conformance_suite() {
    let clients = clients().await;
    conformance::job_store_suite(|| {
        let clients = clients.clone();
        async move { fresh_adapters(&clients, "store").await.jobs }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_queue_passes_the_conformance_suite() {
    let clients = clients().await;
    conformance::queue_suite(&sqs_config(), || {
        let clients = clients.clone();
        async move { fresh_adapters(&clients, "queue").await.queue }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_results_pass_the_conformance_suite() {
    let clients = clients().await;
    conformance::result_store_suite(|| {
        let clients = clients.clone();
        async move { fresh_adapters(&clients, "results").await.results }
    })
    .await;
}
