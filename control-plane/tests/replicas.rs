//! Replicas: several control planes on one PostgreSQL database (always on
//! PostgreSQL, whatever `KEYGATE_TEST_BACKEND` says). They share one key set
//! and one history of versions while both take writes; a write through one
//! wakes the held long-polls of the other (LISTEN/NOTIFY), and a change made
//! without a notification still does within the periodic re-check; the
//! delivered-revocation answer counts the Envoys of the replica that took
//! the write; no log or error shows the database password.

// Test code: a failed unwrap or assertion is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{join_all, pg, snapshot, Server, BIN};
use serde_json::json;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Two replicas on one fresh database.
async fn replicas() -> (Server, Server) {
    let database = pg::fresh_database().await;
    let a = Server::start_on(&database, &[]).await;
    let b = Server::start_on(&database, &[]).await;
    (a, b)
}

fn key_set(reply: &common::Reply) -> String {
    reply.header("x-keygate-key-set").unwrap().to_string()
}

/// The version `server` serves (its own view, after any wake-up).
async fn served(server: &Server) -> u64 {
    server.feed("").await.version()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_writing_at_once_serve_one_key_set_and_one_history() {
    let (a, b) = replicas().await;
    let empty = a.feed("").await;
    assert_eq!(key_set(&empty), key_set(&b.feed("").await), "one key set");
    let t = a.create_tenant("acme").await;
    const EACH: usize = 40;
    let writer = |server: &'static str| {
        let (a, b, admin) = (&a, &b, &t.key);
        async move {
            let on = if server == "a" { a } else { b };
            let mut made = Vec::new();
            for i in 0..EACH {
                let body = json!({"name": format!("{server}{i}"), "scopes": ["memory:read"]});
                let v = on.create_key(admin, body).await;
                made.push(v["api_key"].as_str().unwrap().to_string());
            }
            made
        }
    };
    let made: Vec<String> = join_all(["a", "b", "a", "b"].map(writer))
        .await
        .into_iter()
        .flatten()
        .collect();
    let total = 4 * EACH;
    // One revision per change, every version from the one counter.
    let expected = empty.version() + total as u64 + 1;
    for server in [&a, &b] {
        assert!(
            common::eventually(Duration::from_secs(2), || async {
                served(server).await == expected
            })
            .await,
            "both replicas reach version {expected}"
        );
    }
    let (table_a, table_b) = (
        snapshot(&a.feed("").await.bytes),
        snapshot(&b.feed("").await.bytes),
    );
    assert_eq!(table_a.len(), total + 1);
    for key in &made {
        assert!(table_a.get(&common::hash(key)).is_some());
    }
    assert_eq!(table_b.len(), table_a.len());
    // The same delta from the same base, byte for byte, on either replica.
    let since = format!("since={}", empty.version() + 5);
    let (delta_a, delta_b) = (a.feed(&since).await, b.feed(&since).await);
    assert_eq!(delta_a.status, 200);
    assert_eq!(delta_a.bytes, delta_b.bytes, "one history");
    let keys: HashSet<&String> = made.iter().collect();
    assert_eq!(keys.len(), total);
    println!("{total} keys written through 2 replicas at once: one history up to v{expected}");
}

#[tokio::test]
async fn a_revocation_through_one_replica_wakes_the_long_polls_of_the_other() {
    let (a, b) = replicas().await;
    let t = a.create_tenant("acme").await;
    let mut took = Vec::new();
    for i in 0..10 {
        let made = a
            .create_key(
                &t.key,
                json!({"name": format!("k{i}"), "scopes": ["memory:read"]}),
            )
            .await;
        let current = a.feed("").await.version();
        assert!(
            common::eventually(Duration::from_secs(2), || async {
                served(&b).await == current
            })
            .await
        );
        let poll = async {
            let reply = b.feed(&format!("since={current}&wait=10")).await;
            (reply, Instant::now())
        };
        let revoke = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let path = format!("/api/v1/api-keys/{}", made["id"].as_str().unwrap());
            let reply = a.call("DELETE", &path, Some(&t.key), None).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            Instant::now()
        };
        let ((reply, woke), answered) = tokio::join!(poll, revoke);
        assert_eq!(reply.status, 200, "woken with the delta, not a timeout");
        assert!(reply.version() > current);
        took.push(woke.saturating_duration_since(answered));
    }
    took.sort();
    let (p50, max) = (took[took.len() / 2], took[took.len() - 1]);
    println!("replica B's long-poll answered {p50:?} (p50), {max:?} (max) after A's DELETE answer");
    // The re-check alone (every 250 ms) would make the median ~125 ms.
    assert!(p50 < Duration::from_millis(100), "{took:?}");
    assert!(max < Duration::from_millis(500), "{took:?}");
}

#[tokio::test]
async fn a_change_without_a_notification_is_seen_within_the_recheck() {
    let (a, _b) = replicas().await;
    let t = a.create_tenant("acme").await;
    let current = a.feed("").await.version();
    let poll = async {
        let reply = a.feed(&format!("since={current}&wait=10")).await;
        (reply, Instant::now())
    };
    let sneak = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        // A revision committed without NOTIFY (a lost notification).
        let id = u64::from_str_radix(t.key_id.trim_start_matches("key_"), 16).unwrap();
        let key_id = i64::from_ne_bytes(id.to_ne_bytes());
        a.sql(&format!(
            "WITH moved AS (UPDATE feed_state SET version = version + 1 RETURNING version) \
             INSERT INTO key_revisions (version, key_id) SELECT version, {key_id} FROM moved"
        ))
        .await;
        Instant::now()
    };
    let ((reply, woke), committed) = tokio::join!(poll, sneak);
    let took = woke.saturating_duration_since(committed);
    println!("a change without NOTIFY woke the long-poll after {took:?}");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.version(), current + 1);
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[tokio::test]
async fn the_delivered_answer_counts_the_envoys_of_the_replica_that_took_the_write() {
    let (a, b) = replicas().await;
    let t = a.create_tenant("acme").await;
    let on_a = a.feed("client=envoy-a").await;
    let on_b = b.feed("client=envoy-b").await;
    let ours = key_set(&on_a);
    let made = a
        .create_key(&t.key, json!({"name": "k", "scopes": ["memory:read"]}))
        .await;
    // envoy-a acknowledges on its next poll; envoy-b (on B) is not counted.
    let acking = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let version = a.feed("").await.version();
        a.feed(&format!("since={version}&key_set={ours}&client=envoy-a"))
            .await
    };
    let revoke = async {
        let path = format!("/api/v1/api-keys/{}", made["id"].as_str().unwrap());
        a.call("DELETE", &path, Some(&t.key), None).await
    };
    let (reply, _) = tokio::join!(revoke, acking);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json()["propagated"],
        json!({"envoys": 1, "reached": 1})
    );
    assert_eq!(b.metric("keygate_feed_envoys").await, 1);
    drop(on_b);
}

#[tokio::test]
async fn the_database_password_is_never_shown() {
    let (a, _b) = replicas().await;
    let password = pg::password(a.database()).to_string();
    a.create_tenant("acme").await;
    assert!(!a.log().is_empty());
    assert!(!a.log().contains(&password), "the log shows the password");

    // A database that cannot be reached: the error names it, without it.
    let url = "postgres://keygate:n0t-shown-s3cret@127.0.0.1:1/keygate";
    let out = std::process::Command::new(BIN)
        .args(["--database", url, "tenant", "create", "--name", "a"])
        .args(["--email", "a@example.test"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("postgres://keygate:***@127.0.0.1:1/keygate"),
        "{stderr}"
    );
    assert!(!stderr.contains("n0t-shown-s3cret"), "{stderr}");
    let help = std::process::Command::new(BIN)
        .args(["serve", "--help"])
        .env("KEYGATE_DATABASE", url)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&help.stdout).contains("n0t-shown-s3cret"));
}

#[tokio::test]
async fn a_filter_ahead_of_a_replica_is_held_not_answered_at_once() {
    let (a, b) = replicas().await;
    a.create_tenant("acme").await;
    let ours = key_set(&b.feed("").await);
    // A change B has not heard of yet (no NOTIFY; its re-check is 250 ms
    // away), as a filter coming from another replica would already hold.
    a.sql("UPDATE feed_state SET version = version + 1").await;
    let ahead = a.feed("").await.version();
    let start = Instant::now();
    let reply = b
        .feed(&format!("since={ahead}&key_set={ours}&wait=1"))
        .await;
    let took = start.elapsed();
    println!("a filter ahead of replica B was held {took:?} (wait=1)");
    assert_eq!((reply.status, reply.version()), (304, ahead));
    assert!(
        took >= Duration::from_millis(900),
        "answered at once: {took:?}"
    );
}

#[tokio::test]
async fn replicas_starting_together_on_a_new_database_make_one_schema_and_key_set() {
    let database = pg::fresh_database().await;
    let started = join_all((0..3).map(|_| Server::start_on(&database, &[]))).await;
    let mut ids = HashSet::new();
    for server in &started {
        ids.insert(key_set(&server.feed("").await));
    }
    assert_eq!(ids.len(), 1, "one key set: {ids:?}");
    let migrated = started
        .iter()
        .filter(|s| s.log().contains("database migrated"))
        .count();
    assert_eq!(migrated, 1, "the schema was applied once");
}
