//! Concurrent writers through the HTTP API: every acknowledged key is stored
//! once, listed once and in the key table, with distinct ids and keys.

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
use std::collections::HashSet;
use std::time::Instant;

const WRITERS: usize = 8;
const KEYS_PER_WRITER: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_writers_lose_and_duplicate_nothing() {
    // Thousands of mints at full speed: no management-rate limit.
    let server = Server::start_with(&common::plans::unthrottled()).await;
    let t = server.create_tenant("acme").await;
    let start = Instant::now();
    let writer = |w: usize| {
        let (server, admin) = (&server, &t.key);
        async move {
            let mut made = Vec::with_capacity(KEYS_PER_WRITER);
            for i in 0..KEYS_PER_WRITER {
                let body = json!({"name": format!("w{w}-{i}"), "scopes": ["memory:read"]});
                let v = server.create_key(admin, body).await;
                made.push((
                    v["id"].as_str().unwrap().to_string(),
                    v["api_key"].as_str().unwrap().to_string(),
                ));
            }
            made
        }
    };
    let made: Vec<(String, String)> = join_all((0..WRITERS).map(writer))
        .await
        .into_iter()
        .flatten()
        .collect();
    let elapsed = start.elapsed();
    let total = WRITERS * KEYS_PER_WRITER;
    assert_eq!(made.len(), total);
    eprintln!(
        "{total} keys by {WRITERS} writers in {elapsed:?} ({:.0}/s, debug build)",
        total as f64 / elapsed.as_secs_f64()
    );

    let ids: HashSet<&str> = made.iter().map(|(id, _)| id.as_str()).collect();
    let keys: HashSet<&str> = made.iter().map(|(_, key)| key.as_str()).collect();
    assert_eq!(ids.len(), total, "distinct ids");
    assert_eq!(keys.len(), total, "distinct keys");

    let list = server.list_all(&t.key).await;
    let listed: Vec<&str> = list.iter().map(|k| k["id"].as_str().unwrap()).collect();
    assert_eq!(
        listed.len(),
        total + 1,
        "every key listed once, plus the first"
    );
    let listed_set: HashSet<&str> = listed.iter().copied().collect();
    assert_eq!(listed_set.len(), listed.len(), "no duplicates in the list");
    assert!(
        ids.is_subset(&listed_set),
        "every acknowledged key is listed"
    );

    let reply = server.feed("").await;
    let table = snapshot(&reply.bytes);
    assert_eq!(table.len(), total + 1);
    for (id, key) in &made {
        let record = table.get(&hash(key)).expect("in the key table");
        assert_eq!(&record.key_id.to_string(), id);
    }
    // One revision per key: the first key's and the 4000 new ones.
    let empty_version = 1;
    assert_eq!(reply.version(), empty_version + total as u64 + 1);
}
