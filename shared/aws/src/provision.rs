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
/// Each service (DynamoDB, SQS, S3) must have one, its own (`AWS_ENDPOINT_URL_SQS`, ...) or
/// the shared `AWS_ENDPOINT_URL`, so the suites can run with SQS and S3 on LocalStack and
/// DynamoDB on moto. `VACAL_ALLOW_REMOTE_ENDPOINT=1` lifts the loopback rule (a deliberate
/// run against a remote emulator). Returns the endpoints, for messages.
pub fn require_loopback_endpoint() -> Result<String, String> {
    endpoints_are_loopback(
        |name| std::env::var(name).ok(),
        std::env::var("VACAL_ALLOW_REMOTE_ENDPOINT").is_ok_and(|v| v == "1"),
    )
}

fn endpoints_are_loopback(
    var: impl Fn(&str) -> Option<String>,
    allow_remote: bool,
) -> Result<String, String> {
    const HOW: &str =
        "start the emulator first: `bash tests/aws/emulator.sh cargo test -p vacal-aws` \
        (installs moto into .venv and sets AWS_ENDPOINT_URL), or point AWS_ENDPOINT_URL at a \
        running moto or LocalStack, e.g. AWS_ENDPOINT_URL=http://127.0.0.1:4566";
    let set = |name: &str| var(name).filter(|e| !e.trim().is_empty());
    let shared = set("AWS_ENDPOINT_URL");
    let mut described = Vec::new();
    for service in ["DYNAMODB", "SQS", "S3"] {
        let own = format!("AWS_ENDPOINT_URL_{service}");
        let (name, endpoint) = match (set(&own), &shared) {
            (Some(e), _) => (own, e),
            (None, Some(e)) => ("AWS_ENDPOINT_URL".to_string(), e.clone()),
            (None, None) => {
                return Err(format!(
                    "neither {own} nor AWS_ENDPOINT_URL is set: these tests need an AWS \
                     emulator; {HOW}"
                ))
            }
        };
        if !is_loopback(&endpoint) && !allow_remote {
            return Err(format!(
                "{name}={endpoint} is not a loopback address; tests only talk to a local \
                 emulator (set VACAL_ALLOW_REMOTE_ENDPOINT=1 to override)"
            ));
        }
        described.push((service.to_lowercase(), endpoint));
    }
    if described.iter().all(|(_, e)| *e == described[0].1) {
        return Ok(described.swap_remove(0).1);
    }
    Ok(described
        .iter()
        .map(|(service, e)| format!("{service} {e}"))
        .collect::<Vec<_>>()
        .join(", "))
}

fn is_loopback(endpoint: &str) -> bool {
    let host = endpoint
        .split("://")
        .nth(1)
        .unwrap_or(endpoint)
        .split('/')
        .next()
        .unwrap_or_default();
    let host = host
        .rsplit_once(':')
        .filter(|(h, port)| !h.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(h, _)| h);
    host == "localhost"
        || host.starts_with("127.")
        || host == "[::1]"
        || host.ends_with(".localhost")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn one_shared_loopback_endpoint_serves_every_service() {
        let got = endpoints_are_loopback(
            vars(&[("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")]),
            false,
        );
        assert_eq!(got, Ok("http://127.0.0.1:5000".to_string()));
    }

    #[test]
    fn per_service_endpoints_are_checked_and_named() {
        let got = endpoints_are_loopback(
            vars(&[
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
                ("AWS_ENDPOINT_URL_SQS", "http://localhost:4566"),
                ("AWS_ENDPOINT_URL_S3", "http://localhost:4566"),
            ]),
            false,
        );
        assert_eq!(
            got,
            Ok("dynamodb http://127.0.0.1:5000, sqs http://localhost:4566, s3 http://localhost:4566"
                .to_string())
        );
        let remote = endpoints_are_loopback(
            vars(&[
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
                ("AWS_ENDPOINT_URL_S3", "https://s3.example.org"),
            ]),
            false,
        );
        assert!(
            remote
                .as_ref()
                .is_err_and(|e| e
                    .starts_with("AWS_ENDPOINT_URL_S3=https://s3.example.org is not a loopback")),
            "{remote:?}"
        );
        assert!(endpoints_are_loopback(
            vars(&[
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
                ("AWS_ENDPOINT_URL_S3", "https://s3.example.org"),
            ]),
            true,
        )
        .is_ok());
    }

    #[test]
    fn a_service_without_an_endpoint_is_refused() {
        let got = endpoints_are_loopback(
            vars(&[
                ("AWS_ENDPOINT_URL_SQS", "http://127.0.0.1:4566"),
                ("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:4566"),
            ]),
            false,
        );
        assert!(
            got.as_ref()
                .is_err_and(|e| e
                    .starts_with("neither AWS_ENDPOINT_URL_DYNAMODB nor AWS_ENDPOINT_URL is set")),
            "{got:?}"
        );
        assert!(endpoints_are_loopback(vars(&[]), false).is_err());
        assert!(endpoints_are_loopback(vars(&[("AWS_ENDPOINT_URL", " ")]), false).is_err());
    }

    #[test]
    fn loopback_hosts() {
        for e in [
            "http://localhost:1",
            "http://127.0.0.1",
            "http://[::1]:4566/",
            "http://s3.localhost:9",
        ] {
            assert!(is_loopback(e), "{e}");
        }
        for e in [
            "http://10.0.0.1:4566",
            "https://dynamodb.us-east-1.amazonaws.com",
            "http://127x.example",
        ] {
            assert!(!is_loopback(e), "{e}");
        }
    }
}
