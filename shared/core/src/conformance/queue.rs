//! The checks of [`JobQueue`]: delivery, visibility, release, priority order, delays.

use super::*;

pub(super) const LONG: Duration = Duration::from_secs(30);

/// How long a check waits for a message it needs. A receive may answer with fewer messages
/// than are visible: SQS's short poll samples a subset of its servers, and an emulator may
/// notice an expired visibility or a due delay a moment late. So a check that needs a
/// message polls for it, and only a check that needs none reads a single empty answer.
pub(super) const RECEIVE_DEADLINE: Duration = Duration::from_secs(10);

/// Receives (each hidden for `visibility`) until `want` deliveries have arrived, at most
/// `max` in all, or until [`RECEIVE_DEADLINE`]; returns what arrived.
pub(super) async fn receive_until(
    q: &Arc<dyn JobQueue>,
    want: usize,
    max: u32,
    visibility: Duration,
) -> Vec<Delivery> {
    let deadline = Instant::now() + RECEIVE_DEADLINE;
    let mut got: Vec<Delivery> = Vec::new();
    loop {
        let room = max.saturating_sub(got.len() as u32);
        got.extend(q.receive(room, visibility).await.expect("receive"));
        if got.len() >= want || room == 0 || Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The job ids of up to `max` messages, waiting until at least `want` have arrived (`want` 0:
/// one receive, for checks that no message is there).
pub(super) async fn receive_ids(q: &Arc<dyn JobQueue>, want: usize, max: u32) -> Vec<String> {
    receive_until(q, want, max, LONG)
        .await
        .into_iter()
        .map(|d| d.job_id)
        .collect()
}

pub(super) async fn receive_one(
    q: &Arc<dyn JobQueue>,
    visibility: Duration,
    what: &str,
) -> Delivery {
    let mut got = receive_until(q, 1, 1, visibility).await;
    assert_eq!(got.len(), 1, "{what}: expected one delivery, got {got:?}");
    got.remove(0)
}

pub(super) async fn queue_send_receive_ack(q: Arc<dyn JobQueue>) {
    assert_eq!(
        q.depth().await.expect("depth"),
        0,
        "queue_send_receive_ack: fresh queue is empty"
    );
    assert!(
        q.receive(10, LONG).await.expect("receive").is_empty(),
        "queue_send_receive_ack: receiving from an empty queue gives nothing"
    );
    q.send("job_q00000000001", 5, Duration::ZERO)
        .await
        .expect("send");
    assert_eq!(
        q.depth().await.expect("depth"),
        1,
        "queue_send_receive_ack: one waiting"
    );
    let d = receive_one(&q, LONG, "queue_send_receive_ack").await;
    assert_eq!(
        d.job_id, "job_q00000000001",
        "queue_send_receive_ack: the job sent"
    );
    assert_eq!(
        d.receive_count, 1,
        "queue_send_receive_ack: first delivery counts 1"
    );
    assert_eq!(
        q.depth().await.expect("depth"),
        1,
        "queue_send_receive_ack: an in-flight message still counts in depth"
    );
    assert!(
        q.receive(10, LONG).await.expect("receive").is_empty(),
        "queue_send_receive_ack: an in-flight message is not delivered again"
    );
    q.ack(&d.receipt).await.expect("ack");
    assert_eq!(
        q.depth().await.expect("depth"),
        0,
        "queue_send_receive_ack: acked is gone"
    );
    q.ack(&d.receipt)
        .await
        .expect("queue_send_receive_ack: a second ack of one receipt must succeed");
    q.release(&d.receipt, Duration::ZERO)
        .await
        .expect("queue_send_receive_ack: releasing an acked message must succeed");
    assert!(
        q.receive(10, LONG).await.expect("receive").is_empty(),
        "queue_send_receive_ack: an acked message is never delivered again"
    );

    // Every send is its own message, even for the same job (at-least-once).
    q.send("job_q00000000002", 5, Duration::ZERO)
        .await
        .expect("send");
    q.send("job_q00000000002", 5, Duration::ZERO)
        .await
        .expect("send");
    assert_eq!(
        q.depth().await.expect("depth"),
        2,
        "queue_send_receive_ack: two sends, two messages"
    );
    let got = receive_until(&q, 2, 10, LONG).await;
    assert_eq!(
        got.len(),
        2,
        "queue_send_receive_ack: both sends delivered, got {got:?}"
    );
    assert_ne!(
        got[0].receipt, got[1].receipt,
        "queue_send_receive_ack: receipts are distinct"
    );
    for d in &got {
        q.ack(&d.receipt).await.expect("ack");
    }
    assert_eq!(
        q.depth().await.expect("depth"),
        0,
        "queue_send_receive_ack: all acked"
    );
}

pub(super) async fn queue_visibility_timeout(config: &SuiteConfig, q: Arc<dyn JobQueue>) {
    let vis = config.tick * 2;
    q.send("job_vis000000001", 5, Duration::ZERO)
        .await
        .expect("send");
    let started = Instant::now();
    let first = receive_one(&q, vis, "queue_visibility_timeout").await;
    let again = q.receive(10, LONG).await.expect("receive");
    // On a starved machine the visibility may already have passed; then this says nothing.
    if started.elapsed() < vis {
        assert!(
            again.is_empty(),
            "queue_visibility_timeout: a message must stay hidden during its visibility timeout, got {again:?}"
        );
    }
    tokio::time::sleep(vis + config.tick).await;
    let second = receive_one(
        &q,
        LONG,
        "queue_visibility_timeout: redelivery after the timeout",
    )
    .await;
    assert_eq!(
        second.job_id, first.job_id,
        "queue_visibility_timeout: same job redelivered"
    );
    assert_eq!(
        second.receive_count, 2,
        "queue_visibility_timeout: the redelivery counts 2"
    );
    assert_ne!(
        second.receipt, first.receipt,
        "queue_visibility_timeout: each delivery has its own receipt"
    );
    q.ack(&first.receipt)
        .await
        .expect("queue_visibility_timeout: acking a stale receipt must not fail");
    if config.strict_queue {
        assert_eq!(
            q.depth().await.expect("depth"),
            1,
            "queue_visibility_timeout: a stale receipt must not ack the newer delivery"
        );
    }
    q.ack(&second.receipt).await.expect("ack");
    assert_eq!(
        q.depth().await.expect("depth"),
        0,
        "queue_visibility_timeout: acked"
    );
}

pub(super) async fn queue_release(config: &SuiteConfig, q: Arc<dyn JobQueue>) {
    let delay = config.tick * 2;
    q.send("job_rel000000001", 5, Duration::ZERO)
        .await
        .expect("send");
    let first = receive_one(&q, LONG, "queue_release").await;
    let started = Instant::now();
    q.release(&first.receipt, delay).await.expect("release");
    let again = q.receive(10, LONG).await.expect("receive");
    if started.elapsed() < delay {
        assert!(
            again.is_empty(),
            "queue_release: a released message must stay hidden for the delay, got {again:?}"
        );
    }
    tokio::time::sleep(delay + config.tick).await;
    let second = receive_one(&q, LONG, "queue_release: visible after the delay").await;
    assert_eq!(second.job_id, first.job_id, "queue_release: same job");
    assert_eq!(
        second.receive_count, 2,
        "queue_release: the redelivery counts 2"
    );
    q.release(&second.receipt, Duration::ZERO)
        .await
        .expect("release");
    let third = receive_one(&q, LONG, "queue_release: release with no delay").await;
    assert_eq!(
        third.receive_count, 3,
        "queue_release: the third delivery counts 3"
    );
    q.ack(&third.receipt).await.expect("ack");
    assert_eq!(q.depth().await.expect("depth"), 0, "queue_release: acked");
}

pub(super) async fn queue_priority_order(config: &SuiteConfig, q: Arc<dyn JobQueue>) {
    // Priorities from the three bands of the AWS design (1-3, 4-7, 8-10).
    let sends = [
        ("job_low00000001", 2),
        ("job_high0000001", 9),
        ("job_mid00000001", 5),
        ("job_high0000002", 9),
        ("job_mid00000002", 5),
    ];
    for (job, priority) in sends {
        q.send(job, priority, Duration::ZERO).await.expect("send");
    }
    assert_eq!(
        q.depth().await.expect("depth"),
        5,
        "queue_priority_order: five waiting"
    );
    let pair = receive_ids(&q, 1, 2).await;
    assert!(
        !pair.is_empty() && pair.len() <= 2,
        "queue_priority_order: receive(2) gives one or two messages, got {pair:?}"
    );
    if config.strict_queue {
        assert_eq!(
            pair,
            vec!["job_high0000001", "job_high0000002"],
            "queue_priority_order: receive(2) gives the two highest, FIFO"
        );
    }
    let mut got = pair;
    // One at a time, to see the order; bounded by the deadline of each receive, so a queue
    // that loses messages fails instead of hanging.
    while got.len() < sends.len() {
        let next = receive_ids(&q, 1, 1).await;
        if next.is_empty() {
            break;
        }
        got.extend(next);
    }
    if config.strict_queue {
        assert_eq!(
            got,
            vec![
                "job_high0000001",
                "job_high0000002",
                "job_mid00000001",
                "job_mid00000002",
                "job_low00000001"
            ],
            "queue_priority_order: higher priority first, FIFO within a priority"
        );
    } else {
        assert!(
            got.first().is_some_and(|j| j.starts_with("job_high")),
            "queue_priority_order: the highest priority must come first, got {got:?}"
        );
        let want: Vec<String> = sends.iter().map(|(j, _)| j.to_string()).collect();
        assert_eq!(
            sorted(got),
            sorted(want),
            "queue_priority_order: every message delivered once"
        );
    }
}

pub(super) async fn queue_delayed_send(config: &SuiteConfig, q: Arc<dyn JobQueue>) {
    let delay = config.tick * 2;
    let started = Instant::now();
    q.send("job_later0000001", 5, delay).await.expect("send");
    q.send("job_now000000001", 5, Duration::ZERO)
        .await
        .expect("send");
    let now = receive_ids(&q, 1, 10).await;
    if started.elapsed() < delay {
        assert_eq!(
            now,
            vec!["job_now000000001"],
            "queue_delayed_send: a delayed message must be hidden until due"
        );
    }
    assert_eq!(
        q.depth().await.expect("depth"),
        2,
        "queue_delayed_send: a delayed message counts in depth"
    );
    tokio::time::sleep(delay + config.tick).await;
    let mut later = receive_ids(&q, 1, 10).await;
    later.retain(|j| j != "job_now000000001");
    assert_eq!(
        later,
        vec!["job_later0000001"],
        "queue_delayed_send: the delayed message is delivered once due"
    );
}
