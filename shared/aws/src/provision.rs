//! Creates the resources of a deployment (table, queues with their DLQs, bucket) as the
//! SAM template declares them, for tests against an emulator. Production uses the
//! template; this mirrors its key schema, index, TTL and redrive policy.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;

use crate::{AwsEnv, Band, Clients, QueueUrls, GSI1};

/// Deliveries before SQS moves a message to its dead-letter queue (the template's value).
pub const MAX_RECEIVE_COUNT: u32 = 3;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn band_name(band: Band) -> &'static str {
    match band {
        Band::High => "high",
        Band::Normal => "normal",
        Band::Low => "low",
    }
}

/// Creates `<prefix>-jobs`, `<prefix>-{high,normal,low}` with `-dlq` twins, and
/// `<prefix>-results`, and returns their environment. `visibility_secs` is the queues'
/// default visibility timeout.
pub async fn create_all(
    clients: &Clients,
    prefix: &str,
    visibility_secs: u32,
) -> Result<AwsEnv, BoxError> {
    let table = format!("{prefix}-jobs");
    create_table(clients, &table).await?;
    let mut queues = Vec::new();
    let mut dlqs = Vec::new();
    for band in Band::ALL {
        let name = format!("{prefix}-{}", band_name(band));
        let (queue, dlq) = create_queue_pair(clients, &name, visibility_secs).await?;
        queues.push(queue);
        dlqs.push(dlq);
    }
    let bucket = format!("{prefix}-results");
    clients.s3.create_bucket().bucket(&bucket).send().await?;
    let urls = |v: Vec<String>| QueueUrls {
        high: v[0].clone(),
        normal: v[1].clone(),
        low: v[2].clone(),
    };
    Ok(AwsEnv {
        jobs_table: table,
        results_bucket: bucket,
        queues: urls(queues),
        dead_letter_queues: urls(dlqs),
    })
}

/// The jobs table: `pk`/`sk`, index `GSI1` on `gsi1pk`/`gsi1sk` (all attributes), TTL on
/// `expires_at`, on-demand billing.
pub async fn create_table(clients: &Clients, table: &str) -> Result<(), BoxError> {
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
    };
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
    };
    clients
        .dynamodb
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("pk")?)
        .attribute_definitions(attr("sk")?)
        .attribute_definitions(attr("gsi1pk")?)
        .attribute_definitions(attr("gsi1sk")?)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(GSI1)
                .key_schema(key("gsi1pk", KeyType::Hash)?)
                .key_schema(key("gsi1sk", KeyType::Range)?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()?,
        )
        .send()
        .await?;
    clients
        .dynamodb
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name("expires_at")
                .build()?,
        )
        .send()
        .await?;
    Ok(())
}

/// A queue `name` whose messages go to `name-dlq` after [`MAX_RECEIVE_COUNT`] deliveries;
/// returns both URLs.
pub async fn create_queue_pair(
    clients: &Clients,
    name: &str,
    visibility_secs: u32,
) -> Result<(String, String), BoxError> {
    let dlq = clients
        .sqs
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .send()
        .await?
        .queue_url
        .ok_or("CreateQueue returned no URL")?;
    let dlq_arn = clients
        .sqs
        .get_queue_attributes()
        .queue_url(&dlq)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or("GetQueueAttributes returned no QueueArn")?;
    let redrive = serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": MAX_RECEIVE_COUNT.to_string(),
    });
    let queue = clients
        .sqs
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            visibility_secs.to_string(),
        )
        .send()
        .await?
        .queue_url
        .ok_or("CreateQueue returned no URL")?;
    Ok((queue, dlq))
}

/// Refuses an endpoint that is not on this machine: tests must never reach a real account.
/// `VACAL_ALLOW_REMOTE_ENDPOINT=1` lifts this (a deliberate run against a remote emulator).
pub fn require_loopback_endpoint() -> Result<String, String> {
    const HOW: &str =
        "start the emulator first: `bash tests/aws/emulator.sh cargo test -p vacal-aws` \
        (installs moto into .venv and sets AWS_ENDPOINT_URL), or point AWS_ENDPOINT_URL at a \
        running moto or LocalStack, e.g. AWS_ENDPOINT_URL=http://127.0.0.1:4566";
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .ok()
        .filter(|e| !e.trim().is_empty())
        .ok_or_else(|| {
            format!("AWS_ENDPOINT_URL is not set: these tests need an AWS emulator; {HOW}")
        })?;
    let host = endpoint
        .split("://")
        .nth(1)
        .unwrap_or(&endpoint)
        .split('/')
        .next()
        .unwrap_or_default();
    let host = host
        .rsplit_once(':')
        .filter(|(h, port)| !h.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(h, _)| h);
    let loopback = host == "localhost"
        || host.starts_with("127.")
        || host == "[::1]"
        || host.ends_with(".localhost");
    let allowed = std::env::var("VACAL_ALLOW_REMOTE_ENDPOINT").is_ok_and(|v| v == "1");
    if !loopback && !allowed {
        return Err(format!(
            "AWS_ENDPOINT_URL={endpoint} is not a loopback address; tests only talk to a local \
             emulator (set VACAL_ALLOW_REMOTE_ENDPOINT=1 to override)"
        ));
    }
    Ok(endpoint)
}
