//! Durability: a write acknowledged with a 201 survives `kill -9`, even with
//! other writes in flight, and the feed version never goes back; so does a
//! usage batch acknowledged with a 200 (written in a group with others).

// Test code: a failed unwrap or assertion is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{hash, join_all, snapshot, Server, FEED_TOKEN};
use serde_json::json;
use std::sync::Mutex;
use std::time::Duration;

const WRITERS: usize = 4;
/// Acknowledged keys after which the server is killed mid-stream.
const KILL_AFTER: usize = 60;

#[tokio::test]
async fn acknowledged_keys_survive_kill_9_and_the_version_never_goes_back() {
    let mut server = Server::start().await;
    let t = server.create_tenant("acme").await;
    let acknowledged: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let versions: Mutex<Vec<u64>> = Mutex::new(Vec::new());

    let writer = |w: usize| {
        let (server, admin, acknowledged, versions) = (&server, &t.key, &acknowledged, &versions);
        async move {
            for i in 0.. {
                let body = json!({"name": format!("w{w}-{i}"), "scopes": ["memory:read"]});
                let Some(made) = server.try_create_key(admin, &body).await else {
                    return; // the server is gone
                };
                let count = {
                    let mut acked = acknowledged.lock().unwrap();
                    acked.push(made["api_key"].as_str().unwrap().to_string());
                    acked.len()
                };
                if count >= KILL_AFTER && w == 0 {
                    let request = server
                        .client
                        .get(format!("{}/v1/key-table", server.base))
                        .header("authorization", format!("Bearer {}", common::FEED_TOKEN));
                    if let Some(reply) = server.send(request).await {
                        versions.lock().unwrap().push(reply.version());
                    }
                    // Other writers still have requests in flight.
                    server.kill9();
                    return;
                }
            }
        }
    };
    let writers = (0..WRITERS).map(writer);
    tokio::time::timeout(Duration::from_secs(120), join_all(writers))
        .await
        .expect("writers finished");

    let acknowledged = acknowledged.into_inner().unwrap();
    let version_before = versions
        .into_inner()
        .unwrap()
        .into_iter()
        .max()
        .expect("a version was read");
    assert!(acknowledged.len() >= KILL_AFTER);

    server.restart().await;
    let reply = server.feed("").await;
    assert!(
        reply.version() >= version_before,
        "version went back: {} < {version_before}",
        reply.version()
    );
    let table = snapshot(&reply.bytes);
    for key in &acknowledged {
        assert!(
            table.get(&hash(key)).is_some(),
            "acknowledged key {} lost",
            &key[..12]
        );
        let me = server.call("GET", "/api/v1/auth/me", Some(key), None).await;
        assert_eq!(
            me.status,
            200,
            "acknowledged key {} refused after restart",
            &key[..12]
        );
    }
    let list = server.list_all(&t.key).await;
    let ids: std::collections::HashSet<&str> =
        list.iter().map(|k| k["id"].as_str().unwrap()).collect();
    assert!(
        ids.len() > acknowledged.len(),
        "all acknowledged keys and the first are listed"
    );
    assert_eq!(ids.len(), list.len(), "no duplicate ids");

    // New writes continue above every version a filter has seen.
    server
        .create_key(&t.key, json!({"name": "after", "scopes": ["memory:read"]}))
        .await;
    let after = server.feed(&format!("since={}", reply.version())).await;
    assert_eq!(after.status, 200);
    assert!(after.version() > reply.version());
    eprintln!(
        "{} acknowledged keys survived kill -9; version {version_before} -> {}",
        acknowledged.len(),
        after.version()
    );
}

/// One usage batch `n` of one allowed request of `key` in `minute`.
fn usage_batch(n: usize, key_set: &str, key: &str, minute: u64) -> String {
    json!({"batch_id": format!("{n:032x}"), "key_set": key_set,
           "minutes": [{"minute": minute, "keys": [{"key_id": key, "outcomes": {"allowed": 1}}]}]})
    .to_string()
}

/// Sends a usage batch; `None` if the server is gone.
async fn try_ingest(server: &Server, body: &str) -> Option<serde_json::Value> {
    let request = server
        .client
        .post(format!("{}/v1/usage", server.base))
        .header("authorization", format!("Bearer {FEED_TOKEN}"))
        .header("content-type", "application/json")
        .body(body.to_string());
    let reply = server.send(request).await?;
    (reply.status == 200).then(|| reply.json())
}

#[tokio::test]
async fn acknowledged_usage_batches_survive_kill_9_and_count_once() {
    let mut server = Server::start().await;
    let t = server.create_tenant("acme").await;
    let key_set = server
        .feed("")
        .await
        .header("x-keygate-key-set")
        .unwrap()
        .to_string();
    let minute = common::now() / 60 * 60 - 60;
    let sent = std::sync::atomic::AtomicUsize::new(0);
    let acknowledged: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let sender = |_| {
        let (server, key_set, sent, acknowledged) = (&server, &key_set, &sent, &acknowledged);
        let key = t.key_id.as_str();
        async move {
            loop {
                let n = sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = usage_batch(n, key_set, key, minute);
                let Some(answer) = try_ingest(server, &body).await else {
                    return; // the server is gone
                };
                assert_eq!(answer["duplicate"], false);
                let count = {
                    let mut acked = acknowledged.lock().unwrap();
                    acked.push(body);
                    acked.len()
                };
                if count == KILL_AFTER {
                    // Other batches are in flight, some waiting for a group.
                    server.kill9();
                    return;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), join_all((0..WRITERS).map(sender)))
        .await
        .expect("senders finished");
    let acknowledged = acknowledged.into_inner().unwrap();
    let sent = sent.into_inner();

    server.restart().await;
    for body in &acknowledged {
        let answer = try_ingest(&server, body).await.expect("answered");
        assert_eq!(answer["duplicate"], true, "an acknowledged batch was lost");
    }
    // Every batch sent, counted before the kill or now, counts once.
    for n in 0..sent {
        try_ingest(&server, &usage_batch(n, &key_set, &t.key_id, minute))
            .await
            .expect("answered");
    }
    let path = format!(
        "/api/v1/api-keys/{}/usage?from={}&to={}&granularity=minute",
        t.key_id,
        common::rfc3339(minute),
        common::rfc3339(minute + 60)
    );
    let usage = server.call("GET", &path, Some(&t.key), None).await.json();
    assert_eq!(usage["data"][0]["requests"]["allowed"], sent);
    eprintln!(
        "{} acknowledged of {sent} usage batches survived kill -9",
        acknowledged.len()
    );
}
