//! What the conformance suite cannot see: that the adapters store what architecture.md's
//! data model says (keys, index, TTL attribute, S3 layout), that priorities land in their
//! band's queue, and that SQS dead-letters a message after `maxReceiveCount` deliveries.
//! Against the emulator named by `AWS_ENDPOINT_URL`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{TimeDelta, Utc};
use vacal_aws::provision::{create_all, require_loopback_endpoint, MAX_RECEIVE_COUNT};
use vacal_aws::{AwsEnv, Band, Clients, DynamoStore, S3Results, SqsDeadLetters, SqsQueue};
use vacal_core::conformance::sample_job;
use vacal_core::domain::CacheEntry;
use vacal_core::ports::{CacheCounter, JobQueue, JobStore, ResultStore};

async fn fresh(tag: &str) -> (Clients, AwsEnv) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    if let Err(why) = require_loopback_endpoint() {
        panic!("{why}");
    }
    let clients = Clients::for_emulator().await;
    let prefix = format!(
        "vd-{tag}-{}-{}-{}",
        std::process::id(),
        Utc::now().timestamp_subsec_micros(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let env = create_all(&clients, &prefix, 30)
        .await
        .unwrap_or_else(|e| panic!("cannot create test resources: {e:?}"));
    (clients, env)
}

async fn raw_item(
    clients: &Clients,
    table: &str,
    pk: &str,
    sk: &str,
) -> HashMap<String, AttributeValue> {
    clients
        .dynamodb
        .get_item()
        .table_name(table)
        .key("pk", AttributeValue::S(pk.into()))
        .key("sk", AttributeValue::S(sk.into()))
        .send()
        .await
        .expect("GetItem")
        .item
        .unwrap_or_else(|| panic!("no item {pk} / {sk}"))
}

fn s<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> &'a str {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .unwrap_or_else(|| panic!("no string attribute {name} in {item:?}"))
}

fn n(item: &HashMap<String, AttributeValue>, name: &str) -> i64 {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number attribute {name} in {item:?}"))
}

#[tokio::test]
async fn items_follow_the_data_model() {
    let (clients, env) = fresh("model").await;
    let store = DynamoStore::new(
        clients.dynamodb.clone(),
        &env.jobs_table,
        Duration::from_secs(3600),
    );
    let now = Utc::now();
    let mut job = sample_job("job_0a1b2c3d4e5f", now);
    job.expires_at = now + TimeDelta::milliseconds(86_400_500);
    store.insert_job(&job).await.unwrap();

    let item = raw_item(&clients, &env.jobs_table, "JOB#job_0a1b2c3d4e5f", "META").await;
    assert_eq!(
        s(&item, "gsi1pk"),
        format!("JOBS#{}", now.format("%Y-%m-%d"))
    );
    assert_eq!(
        s(&item, "gsi1sk"),
        format!(
            "{}#job_0a1b2c3d4e5f",
            now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        )
    );
    // TTL in epoch seconds, never before the record's own expiry.
    let ttl = n(&item, "expires_at");
    assert!(ttl >= job.expires_at.timestamp() && ttl <= job.expires_at.timestamp() + 1);
    assert_eq!(n(&item, "version"), 1);
    assert_eq!(s(&item, "status"), "pending");

    let entry = CacheEntry {
        cache_key: "ab".repeat(32),
        result_key: "ab".repeat(32),
        size_bytes: 10,
        cached_at: now,
        source_job_id: job.job_id.clone(),
        age_group: None,
        country: None,
        expires_at: now + TimeDelta::hours(1),
    };
    store.put_cache_entry(&entry).await.unwrap();
    let item = raw_item(
        &clients,
        &env.jobs_table,
        &format!("CACHE#{}", "ab".repeat(32)),
        "META",
    )
    .await;
    assert_eq!(s(&item, "gsi1pk"), "CACHE");

    store.count_cache(CacheCounter::Hit).await.unwrap();
    store.count_cache(CacheCounter::Hit).await.unwrap();
    let item = raw_item(&clients, &env.jobs_table, "STATS", "CACHE").await;
    assert_eq!(n(&item, "hits"), 2);
}

#[tokio::test]
async fn results_are_objects_under_results_prefix() {
    let (clients, env) = fresh("s3").await;
    let results = S3Results::new(clients.s3.clone(), &env.results_bucket);
    let key = "cd".repeat(32);
    results.put_if_absent(&key, b"{\"x\":1}").await.unwrap();
    let object = clients
        .s3
        .get_object()
        .bucket(&env.results_bucket)
        .key(format!("results/{key}.json"))
        .send()
        .await
        .expect("the object at results/<key>.json");
    assert_eq!(object.content_type(), Some("application/json"));
    let bytes = object.body.collect().await.unwrap().into_bytes();
    assert_eq!(&bytes[..], b"{\"x\":1}");
    assert!(
        results.put_if_absent("../etc", b"x").await.is_err(),
        "keys that are not hex are refused"
    );
}

#[tokio::test]
async fn each_priority_goes_to_its_band_queue() {
    let (clients, env) = fresh("bands").await;
    let queue = SqsQueue::new(clients.sqs.clone(), env.queues.clone());
    for (job, priority) in [("job_low", 1u8), ("job_normal", 7), ("job_high", 8)] {
        queue.send(job, priority, Duration::ZERO).await.unwrap();
    }
    for (band, want) in [
        (Band::High, "job_high"),
        (Band::Normal, "job_normal"),
        (Band::Low, "job_low"),
    ] {
        let out = clients
            .sqs
            .receive_message()
            .queue_url(env.queues.of(band))
            .max_number_of_messages(10)
            // A long poll: it answers as soon as a message is there, where a short poll
            // may answer empty (SQS samples a subset of its servers).
            .wait_time_seconds(5)
            .send()
            .await
            .unwrap();
        let bodies: Vec<serde_json::Value> = out
            .messages()
            .iter()
            .map(|m| serde_json::from_str(m.body().unwrap()).unwrap())
            .collect();
        assert_eq!(bodies.len(), 1, "{band:?}: {bodies:?}");
        assert_eq!(bodies[0]["job_id"], want, "{band:?}");
    }
}

#[tokio::test]
async fn a_message_that_keeps_failing_ends_in_the_dead_letter_queue() {
    let (clients, env) = fresh("dlq").await;
    let queue = SqsQueue::new(clients.sqs.clone(), env.queues.clone());
    let dead = SqsDeadLetters::new(clients.sqs.clone(), env.dead_letter_queues.clone());
    queue
        .send("job_poison000001", 5, Duration::ZERO)
        .await
        .unwrap();
    // Each delivery "crashes": never acked, visible again after a second. A short poll may
    // answer empty while the message is visible (real SQS samples its servers; LocalStack
    // notices an expired visibility a moment late), so each delivery is polled for.
    for attempt in 1..=MAX_RECEIVE_COUNT {
        let deadline = Instant::now() + Duration::from_secs(15);
        let got = loop {
            let got = queue.receive(10, Duration::from_secs(1)).await.unwrap();
            if !got.is_empty() || Instant::now() > deadline {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(got.len(), 1, "delivery {attempt}: {got:?}");
        assert_eq!(got[0].receive_count, attempt);
        tokio::time::sleep(Duration::from_millis(1300)).await;
    }
    // Over the limit, SQS moves the message to the dead-letter queue instead of delivering
    // it again: keep receiving (never getting it) until the dead-letter queue holds it.
    let deadline = Instant::now() + Duration::from_secs(15);
    let letters = loop {
        let again = queue.receive(10, Duration::from_secs(1)).await.unwrap();
        assert!(
            again.is_empty(),
            "delivered past maxReceiveCount: {again:?}"
        );
        let letters = dead.receive(10, Duration::from_secs(30)).await.unwrap();
        if !letters.is_empty() || Instant::now() > deadline {
            break letters;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].job_id.as_deref(), Some("job_poison000001"));
    assert_eq!(letters[0].band, Band::Normal);
    dead.delete(&letters[0].receipt).await.unwrap();
    assert!(dead
        .receive(10, Duration::from_secs(1))
        .await
        .unwrap()
        .is_empty());
}
