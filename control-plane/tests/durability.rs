//! Durability: a write acknowledged with a 201 survives `kill -9`, even with
//! other writes in flight, and the feed version never goes back.

// Test code: a failed unwrap or assertion is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{hash, join_all, snapshot, Server};
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
