//! vacal-aws: the ports of vacal-core on AWS. Jobs, logs, batches, the cache index and
//! counters live in one DynamoDB table ([`DynamoStore`]), the queue is one SQS queue per
//! priority band ([`SqsQueue`]), results are S3 objects ([`S3Results`]). The same
//! conformance suite as the SQLite adapters runs against them on an emulator.
//!
//! Clients are built once per process from `aws-config`, which reads region, credentials
//! and endpoints from the environment (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_<SERVICE>`):
//! nothing here names a host.

mod dynamo;
pub mod provision;
mod s3;
mod sqs;

use std::collections::HashMap;
use std::sync::Arc;

pub use dynamo::DynamoStore;
pub use s3::S3Results;
pub use sqs::{Band, DeadLetter, JobMessage, QueueUrls, SqsDeadLetters, SqsQueue};
use vacal_core::ports::{RandomIds, SystemClock};
use vacal_core::{Config, Ports};

/// What every function builds once per init: the configuration, the resource names, the SDK
/// clients and the core's ports on them.
pub struct Deployment {
    pub config: Config,
    pub env: AwsEnv,
    pub clients: Clients,
    pub ports: Ports,
}

impl Deployment {
    /// From the function's environment (see `template.yaml`); a missing variable is named.
    pub async fn from_env() -> Result<Deployment, String> {
        let config = Config::from_env().map_err(|e| e.to_string())?;
        let env = AwsEnv::from_env().map_err(|e| e.to_string())?;
        let clients = Clients::from_env().await;
        let ports = ports(&clients, &env, &config);
        Ok(Deployment {
            config,
            env,
            clients,
            ports,
        })
    }
}

/// Name of the table's global secondary index (listing jobs, the cache index).
pub const GSI1: &str = "GSI1";

/// Where the deployment's resources are: the environment contract of the SAM template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsEnv {
    pub jobs_table: String,
    pub results_bucket: String,
    pub queues: QueueUrls,
    pub dead_letter_queues: QueueUrls,
}

/// A required variable is missing or empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EnvError(pub String);

impl AwsEnv {
    /// Reads `JOBS_TABLE`, `RESULTS_BUCKET`, `QUEUE_URL_{HIGH,NORMAL,LOW}` and
    /// `DLQ_URL_{HIGH,NORMAL,LOW}` from the process environment.
    pub fn from_env() -> Result<AwsEnv, EnvError> {
        AwsEnv::from_vars(&std::env::vars().collect())
    }

    /// As [`AwsEnv::from_env`], from a map (tests).
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<AwsEnv, EnvError> {
        let mut missing = Vec::new();
        let mut get = |name: &str| match vars.get(name).map(|v| v.trim()) {
            Some(v) if !v.is_empty() => v.to_string(),
            _ => {
                missing.push(name.to_string());
                String::new()
            }
        };
        let env = AwsEnv {
            jobs_table: get("JOBS_TABLE"),
            results_bucket: get("RESULTS_BUCKET"),
            queues: QueueUrls {
                high: get("QUEUE_URL_HIGH"),
                normal: get("QUEUE_URL_NORMAL"),
                low: get("QUEUE_URL_LOW"),
            },
            dead_letter_queues: QueueUrls {
                high: get("DLQ_URL_HIGH"),
                normal: get("DLQ_URL_NORMAL"),
                low: get("DLQ_URL_LOW"),
            },
        };
        if missing.is_empty() {
            Ok(env)
        } else {
            Err(EnvError(format!(
                "missing environment variable(s): {}",
                missing.join(", ")
            )))
        }
    }
}

/// The three SDK clients, built once from one shared configuration.
#[derive(Clone, Debug)]
pub struct Clients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub s3: aws_sdk_s3::Client,
}

impl Clients {
    /// Loads region, credentials and endpoints from the environment (the SDK's default
    /// chain). With a custom endpoint (an emulator), S3 is addressed path-style, since
    /// virtual-host buckets would need DNS for `<bucket>.127.0.0.1`.
    pub async fn from_env() -> Clients {
        Clients::from_sdk_config(&aws_config::load_from_env().await)
    }

    /// As [`Clients::from_env`], for tests against an emulator: a missing region or missing
    /// credentials default to `us-east-1` and the dummy pair `test`/`test` (an emulator
    /// accepts any signature; a real account would refuse it).
    pub async fn for_emulator() -> Clients {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err() {
            loader = loader.region(aws_config::Region::new("us-east-1"));
        }
        if std::env::var("AWS_ACCESS_KEY_ID").is_err() {
            loader = loader.credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "test",
                "test",
                None,
                None,
                "vacal-tests",
            ));
        }
        Clients::from_sdk_config(&loader.load().await)
    }

    fn from_sdk_config(sdk: &aws_config::SdkConfig) -> Clients {
        let sdk = sdk.clone();
        let custom_s3_endpoint = ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"]
            .iter()
            .any(|v| std::env::var(v).is_ok_and(|v| !v.trim().is_empty()));
        let s3_config = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(custom_s3_endpoint)
            .build();
        Clients {
            dynamodb: aws_sdk_dynamodb::Client::new(&sdk),
            sqs: aws_sdk_sqs::Client::new(&sdk),
            s3: aws_sdk_s3::Client::from_conf(s3_config),
        }
    }
}

/// The adapters of a deployment, wired as `Ports` (real clock, random IDs).
pub fn ports(clients: &Clients, env: &AwsEnv, config: &Config) -> Ports {
    let store = Arc::new(DynamoStore::new(
        clients.dynamodb.clone(),
        &env.jobs_table,
        config.job_retention,
    ));
    Ports {
        store,
        queue: Arc::new(SqsQueue::new(clients.sqs.clone(), env.queues.clone())),
        results: Arc::new(S3Results::new(clients.s3.clone(), &env.results_bucket)),
        clock: Arc::new(SystemClock),
        ids: Arc::new(RandomIds),
    }
}

/// Maps an SDK error to the port's error: throttling, timeouts, 5xx and connection trouble
/// are transient; anything else (access denied, missing table, validation) is not.
pub(crate) fn sdk_error<E, R>(
    what: &str,
    e: &aws_sdk_dynamodb::error::SdkError<E, R>,
) -> vacal_core::ports::StoreError
where
    E: std::error::Error + aws_sdk_dynamodb::error::ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    use aws_sdk_dynamodb::error::SdkError;
    use vacal_core::ports::StoreError;
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            let detail = aws_sdk_dynamodb::error::DisplayErrorContext(e);
            StoreError::Unavailable(format!("{what}: {detail}"))
        }
        SdkError::ServiceError(se) => {
            // Code and message only: the full context (raw response, headers) would end up
            // in API error bodies and health checks.
            let code = se.err().code().unwrap_or("unknown error");
            let detail = match se.err().message() {
                Some(m) => format!("{what}: {code}: {m}"),
                None => format!("{what}: {code}"),
            };
            let transient = code.contains("Throttl")
                || code.contains("ProvisionedThroughputExceeded")
                || code == "RequestLimitExceeded"
                || code == "InternalServerError"
                || code == "ServiceUnavailable"
                || code == "InternalError"
                || code == "SlowDown"
                || code == "TransactionInProgressException";
            if transient {
                StoreError::Unavailable(detail)
            } else {
                StoreError::Other(detail)
            }
        }
        _ => StoreError::Other(format!(
            "{what}: {}",
            aws_sdk_dynamodb::error::DisplayErrorContext(e)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_env() -> HashMap<String, String> {
        [
            ("JOBS_TABLE", "vacal-jobs"),
            ("RESULTS_BUCKET", "vacal-results"),
            ("QUEUE_URL_HIGH", "http://q/high"),
            ("QUEUE_URL_NORMAL", "http://q/normal"),
            ("QUEUE_URL_LOW", "http://q/low"),
            ("DLQ_URL_HIGH", "http://q/high-dlq"),
            ("DLQ_URL_NORMAL", "http://q/normal-dlq"),
            ("DLQ_URL_LOW", "http://q/low-dlq"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn the_environment_contract_is_read_whole() {
        let env = AwsEnv::from_vars(&full_env()).unwrap();
        assert_eq!(env.jobs_table, "vacal-jobs");
        assert_eq!(env.results_bucket, "vacal-results");
        assert_eq!(env.queues.normal, "http://q/normal");
        assert_eq!(env.dead_letter_queues.low, "http://q/low-dlq");
    }

    #[test]
    fn every_missing_variable_is_named() {
        let mut vars = full_env();
        vars.remove("QUEUE_URL_LOW");
        vars.insert("JOBS_TABLE".into(), "  ".into());
        let err = AwsEnv::from_vars(&vars).unwrap_err();
        assert_eq!(
            err.0,
            "missing environment variable(s): JOBS_TABLE, QUEUE_URL_LOW"
        );
    }
}
