//! The AWS deployment end to end: the real Lambda binaries (`vacal-api`, `vacal-worker`,
//! `vacal-janitor`) under `cargo lambda watch`, against the AWS emulator named by
//! `AWS_ENDPOINT_URL` (moto from tests/aws/emulator.sh, or LocalStack). The tests play the
//! parts AWS plays in production: the function URL in front of the API, the SQS event
//! source mapping (receive, invoke the worker, delete what succeeded) and the schedule
//! that invokes the janitor.
//!
//! The first test drives those parts step by step (`EventSource`); the second runs them in
//! the background (`LambdaStack`, what `lambda-stack` serves) and passes scenarios of the
//! HTTP API suite through it.
//!
//! Run: `bash tests/aws/emulator.sh cargo test -p vacal-e2e --test aws_lambda`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use vacal_aws::provision::{create_all, require_loopback_endpoint, MAX_RECEIVE_COUNT};
use vacal_aws::{Band, Clients};
use vacal_e2e::lambda_stack::{
    job_of, scheduled_event, unique_prefix, EventSource, LambdaStack, StackOptions, Watch,
    WatchOptions,
};
use vacal_e2e::{api_suite, Api, Remote};

/// A quick but real calibration of the bundled example.
fn request(country: &str, extra: Value) -> Value {
    let mut body = json!({
        "age_group": "neonate",
        "country": country,
        "mcmc": {"n_mcmc": 400, "n_burn": 400, "n_chain": 2}
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lambda_functions_run_jobs_end_to_end() {
    if let Err(why) = require_loopback_endpoint() {
        panic!("{why}");
    }
    let clients = Clients::for_emulator().await;
    let prefix = format!("ve2e-{}", std::process::id());
    let env = create_all(&clients, &prefix, 60)
        .await
        .unwrap_or_else(|e| panic!("cannot create the test resources: {e:?}"));
    let sqs = EventSource {
        clients: clients.clone(),
        env: env.clone(),
    };
    let watch =
        Arc::new(Watch::start(&env, &WatchOptions::default()).unwrap_or_else(|e| panic!("{e}")));

    // 1. Create over the function URL, run the message through the worker, read the result.
    let (status, created) = watch.api(
        "POST",
        "/api/v1/calibrate/async",
        Some(&request(
            "Mozambique",
            json!({"priority": 9, "use_cache": true}),
        )),
    );
    assert_eq!(status, 200, "{created}");
    let first = created["job_id"].as_str().unwrap().to_string();
    let high = sqs.receive_at_least(Band::High, 1, Some(60)).await.unwrap();
    assert_eq!(high.len(), 1, "priority 9 goes to the high band");
    assert_eq!(job_of(&high[0]), first);
    let failed = sqs.deliver(&watch, Band::High, &[&high[0]]).await.unwrap();
    assert!(failed.is_empty(), "{failed:?}\n{}", watch.log_tail());
    let (status, job) = watch.api("GET", &format!("/api/v1/calibrate/{first}/status"), None);
    assert_eq!(
        (status, job["status"].as_str()),
        (200, Some("success")),
        "{job}"
    );
    let (status, result) = watch.api("GET", &format!("/api/v1/calibrate/{first}/result"), None);
    assert_eq!(status, 200, "{result}");
    assert!(result.to_string().contains("calibrated"), "{result}");
    let object = clients
        .s3
        .list_objects_v2()
        .bucket(&env.results_bucket)
        .prefix("results/")
        .send()
        .await
        .unwrap();
    assert_eq!(
        object.contents().len(),
        1,
        "one result object under results/"
    );

    // 2. Cache hit: the same request again is answered from the first job's result.
    let (_, again) = watch.api(
        "POST",
        "/api/v1/calibrate/async",
        Some(&request(
            "Mozambique",
            json!({"priority": 9, "use_cache": true}),
        )),
    );
    let cached = again["job_id"].as_str().unwrap().to_string();
    assert_eq!(sqs.run_until_idle(&watch).await, vec![cached.clone()]);
    let (_, job) = watch.api("GET", &format!("/api/v1/calibrate/{cached}/status"), None);
    assert_eq!(job["status"], "success", "{job}");
    assert_eq!(
        job["progress"]["step_name"], "Completed (cached)",
        "answered from {first}'s result: {job}"
    );
    let (_, stats) = watch.api("GET", "/api/v1/cache/stats", None);
    assert!(stats.to_string().contains("hit"), "{stats}");

    // 3. A batch with parallel_limit 1: one member is queued at a time.
    let (status, batch) = watch.api(
        "POST",
        "/api/v1/calibrate/batch",
        Some(&json!({
            "jobs": [request("Kenya", json!({})), request("Mali", json!({})), request("Ghana", json!({}))],
            "parallel_limit": 1
        })),
    );
    assert_eq!(status, 200, "{batch}");
    let batch_id = batch["batch_id"].as_str().unwrap().to_string();
    let members: Vec<String> = batch["job_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j.as_str().unwrap().to_string())
        .collect();
    let mut order = Vec::new();
    for _ in 0..members.len() {
        let visible = sqs.receive_all_at_least(1, Some(60)).await.unwrap();
        assert_eq!(
            visible.len(),
            1,
            "parallel_limit 1 queues one member at a time: {:?}",
            visible.iter().map(|(_, m)| job_of(m)).collect::<Vec<_>>()
        );
        let (band, m) = &visible[0];
        order.push(job_of(m));
        assert!(sqs.deliver(&watch, *band, &[m]).await.unwrap().is_empty());
    }
    let mut sorted_order = order.clone();
    sorted_order.sort();
    let mut sorted_members = members.clone();
    sorted_members.sort();
    assert_eq!(sorted_order, sorted_members, "every member ran once");
    let (_, batch_status) = watch.api(
        "GET",
        &format!("/api/v1/calibrate/batch/{batch_id}/status"),
        None,
    );
    assert!(
        batch_status.to_string().contains("completed"),
        "{batch_status}"
    );

    // 4. Cancel: the message still arrives; the worker acks it and the job stays cancelled.
    let (_, created) = watch.api(
        "POST",
        "/api/v1/calibrate/async",
        Some(&request("Kenya", json!({}))),
    );
    let cancelled = created["job_id"].as_str().unwrap().to_string();
    let (status, body) = watch.api("DELETE", &format!("/api/v1/calibrate/{cancelled}"), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(sqs.run_until_idle(&watch).await, vec![cancelled.clone()]);
    let (_, job) = watch.api(
        "GET",
        &format!("/api/v1/calibrate/{cancelled}/status"),
        None,
    );
    assert_eq!(job["status"], "cancelled", "{job}");

    // 5. A malformed message is acked by the real worker (nothing can ever process it).
    clients
        .sqs
        .send_message()
        .queue_url(&env.queues.normal)
        .message_body("this is not a job message")
        .send()
        .await
        .unwrap();
    let junk = sqs
        .receive_at_least(Band::Normal, 1, Some(60))
        .await
        .unwrap();
    assert_eq!(junk.len(), 1);
    assert!(sqs
        .deliver(&watch, Band::Normal, &[&junk[0]])
        .await
        .unwrap()
        .is_empty());

    // 6. Poison: every delivery of this job's message dies (the invocation crashes or
    // times out, so nothing settles it). After maxReceiveCount deliveries SQS moves it to
    // the dead-letter queue, and the next janitor run fails the job with the reason.
    let (_, created) = watch.api(
        "POST",
        "/api/v1/calibrate/async",
        Some(&request("Mali", json!({"priority": 2}))),
    );
    let poisoned = created["job_id"].as_str().unwrap().to_string();
    for delivery in 1..=MAX_RECEIVE_COUNT {
        let got = sqs.receive_at_least(Band::Low, 1, Some(1)).await.unwrap();
        assert_eq!(got.len(), 1, "delivery {delivery}");
        assert_eq!(job_of(&got[0]), poisoned);
        tokio::time::sleep(Duration::from_millis(1300)).await;
    }
    assert!(
        sqs.receive(Band::Low, 10, Some(1))
            .await
            .unwrap()
            .is_empty(),
        "moved to the DLQ"
    );
    let report = watch
        .invoke("vacal-janitor", &scheduled_event())
        .unwrap_or_else(|e| panic!("{e}\n{}", watch.log_tail()));
    assert_eq!(report["dead_lettered"], json!([poisoned]), "{report}");
    let (_, job) = watch.api("GET", &format!("/api/v1/calibrate/{poisoned}/status"), None);
    assert_eq!(job["status"], "failed", "{job}");
    assert!(job.to_string().contains("DeliveryFailed"), "{job}");

    for line in watch.log_lines("init_ms") {
        eprintln!("init: {line}");
    }
}

/// The HTTP API suite's scenarios through the Lambda stack that `lambda-stack` serves:
/// jobs run because the stack plays the SQS event source mapping and the janitor's
/// schedule in the background, as AWS does.
#[test]
fn the_api_suite_passes_through_the_lambda_stack() {
    if let Err(why) = require_loopback_endpoint() {
        panic!("{why}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let options = StackOptions::new(&unique_prefix("ve2e-stack"));
    let stack = runtime
        .block_on(LambdaStack::start(options))
        .unwrap_or_else(|e| panic!("{e}"));
    type Scenario = (&'static str, fn(&dyn Api));
    let scenarios: [Scenario; 6] = [
        (
            "create_status_result_with_the_example_data",
            api_suite::create_status_result_with_the_example_data,
        ),
        (
            "result_files_agree_with_the_result",
            api_suite::result_files_agree_with_the_result,
        ),
        (
            "files_upload_like_json_bodies",
            api_suite::files_upload_like_json_bodies,
        ),
        (
            "every_bad_input_gets_a_4xx_with_the_error_body",
            api_suite::every_bad_input_gets_a_4xx_with_the_error_body,
        ),
        (
            "the_cache_serves_a_repeated_request_without_running_the_engine",
            api_suite::the_cache_serves_a_repeated_request_without_running_the_engine,
        ),
        (
            "listing_deleting_retrying_health_and_metrics",
            api_suite::listing_deleting_retrying_health_and_metrics,
        ),
    ];
    for (name, scenario) in scenarios {
        let started = std::time::Instant::now();
        scenario(&Remote::exclusive(&stack.api_url()));
        eprintln!("{name}: {:.1} s", started.elapsed().as_secs_f64());
    }
    runtime.block_on(stack.stop());
}
