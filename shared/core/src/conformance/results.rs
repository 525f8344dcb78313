//! The checks of [`ResultStore`]: put-if-absent, get, delete.

use super::*;

pub(super) async fn results_put_get_delete(r: Arc<dyn ResultStore>) {
    let key = "c0ffee".repeat(10) + "abcd";
    let first = br#"{"result": {"csmf": [0.25, 0.75]}}"#.to_vec();
    r.put_if_absent(&key, &first).await.expect("put_if_absent");
    assert_eq!(
        r.get(&key).await.expect("get"),
        Some(first.clone()),
        "results_put_get_delete: get returns the bytes put"
    );
    r.put_if_absent(&key, b"other bytes")
        .await
        .expect("results_put_get_delete: a put over an existing key must succeed");
    assert_eq!(
        r.get(&key).await.expect("get"),
        Some(first.clone()),
        "results_put_get_delete: a second put must keep the first bytes"
    );
    assert_eq!(
        r.get(&"0".repeat(64)).await.expect("get"),
        None,
        "results_put_get_delete: an unknown key is None"
    );
    // Large enough to catch truncation or chunking mistakes.
    let big_key = "b1".repeat(32);
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    r.put_if_absent(&big_key, &big)
        .await
        .expect("put_if_absent(big)");
    assert!(
        r.get(&big_key).await.expect("get").as_deref() == Some(big.as_slice()),
        "results_put_get_delete: a 300 kB value must round-trip"
    );
    r.delete(&key).await.expect("delete");
    assert_eq!(
        r.get(&key).await.expect("get"),
        None,
        "results_put_get_delete: a deleted key is gone"
    );
    r.delete(&key)
        .await
        .expect("results_put_get_delete: deleting a missing key must succeed");
    r.put_if_absent(&key, b"again")
        .await
        .expect("put_if_absent");
    assert_eq!(
        r.get(&key).await.expect("get"),
        Some(b"again".to_vec()),
        "results_put_get_delete: after a delete the key can be written again"
    );
}

pub(super) async fn results_concurrent_puts(r: Arc<dyn ResultStore>) {
    let key = "5e".repeat(32);
    let values: Vec<Vec<u8>> = (0..6u8).map(|i| vec![b'a' + i; 50_000]).collect();
    let mut set = JoinSet::new();
    for v in values.clone() {
        let r = r.clone();
        let key = key.clone();
        set.spawn(async move { r.put_if_absent(&key, &v).await });
    }
    while let Some(joined) = set.join_next().await {
        joined.expect("put task panicked").expect("put_if_absent");
    }
    let got = r
        .get(&key)
        .await
        .expect("get")
        .expect("results_concurrent_puts: a value");
    assert!(
        values.contains(&got),
        "results_concurrent_puts: racing puts must leave exactly one whole value ({} bytes read)",
        got.len()
    );
}
