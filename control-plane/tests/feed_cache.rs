//! The feed's answer cache (SPEC §18) against the real server, on either
//! backend: held long-polls waking on one change share one read and one
//! encoded delta; a table's snapshot pages are built once per version
//! however many clients read them, and built again (with the change) once
//! the version moves; a data plane limited to one tenant and the shared
//! token, asking the same page or delta at the same version, each get
//! their own view. Counts come from `keygate_feed_bodies_built_total`.

// Test code: a failed unwrap or assertion is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{eventually, hash, join_all, page_entries, raw_ops, Reply, Server, FEED_TOKEN};
use keygate::feed::RawOp;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

const BUILT: &str = "keygate_feed_bodies_built_total";

/// Creates a key of `admin`'s tenant; its full key and id.
async fn create_key(server: &Server, admin: &str, name: &str) -> (String, String) {
    let made = server
        .create_key(admin, json!({"name": name, "scopes": ["memory:read"]}))
        .await;
    let field = |f: &str| made[f].as_str().unwrap().to_string();
    (field("api_key"), field("id"))
}

/// `GET /v1/key-table?{query}` with `token`.
async fn feed_with(server: &Server, token: &str, query: &str) -> Reply {
    let path = format!("/v1/key-table?{query}");
    server.call("GET", &path, Some(token), None).await
}

/// The hashes of every key of a snapshot read page by page with `token`.
async fn snapshot_hashes(server: &Server, token: &str) -> BTreeSet<[u8; 32]> {
    let (mut hashes, mut after) = (BTreeSet::new(), None::<String>);
    loop {
        let query = match &after {
            None => "since=0".to_string(),
            Some(h) => format!("since=0&after={h}"),
        };
        let reply = feed_with(server, token, &query).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let entries = page_entries(&reply.bytes);
        hashes.extend(entries.iter().map(|e| e.hash));
        if reply.bytes[4] == 1 {
            return hashes;
        }
        after = entries.last().map(|e| common::hex(&e.hash));
    }
}

/// Polls held at the current version, all woken by one revocation, get the
/// same delta, read and encoded once.
#[tokio::test]
async fn held_polls_woken_by_one_change_share_one_encoded_delta() {
    let server = Server::start().await;
    let t = server.create_tenant("acme").await;
    let (key, id) = create_key(&server, &t.key, "k").await;
    let version = server.feed("").await.version();
    let before = server.metric(BUILT).await;
    const POLLS: usize = 40;
    let query = format!("since={version}&wait=30");
    let polls = join_all((0..POLLS).map(|_| server.feed(&query)));
    let revoke = async {
        let held = eventually(Duration::from_secs(20), || async {
            server.metric("keygate_feed_waiting").await == POLLS as u64
        })
        .await;
        assert!(held, "every poll is held");
        let path = format!("/api/v1/api-keys/{id}");
        assert_eq!(
            server
                .call("DELETE", &path, Some(&t.key), None)
                .await
                .status,
            200
        );
    };
    let (replies, ()) = tokio::join!(polls, revoke);
    for reply in &replies {
        assert_eq!(reply.status, 200);
        assert_eq!(reply.bytes, replies[0].bytes, "one delta for every poll");
    }
    let (header, ops) = raw_ops(&replies[0].bytes);
    assert_eq!(header.base, version);
    assert_eq!(ops, vec![RawOp::Remove(hash(&key))]);
    assert_eq!(server.metric(BUILT).await - before, 1, "built once");
}

/// Three clients reading the pages of one version cost one build of each
/// page; a change moves the version and the pages are built again, with it.
#[tokio::test]
async fn snapshot_pages_are_built_once_per_version() {
    let server = Server::start_with(&["--feed-page-keys", "2"]).await;
    let t = server.create_tenant("acme").await;
    for i in 0..4 {
        create_key(&server, &t.key, &format!("k{i}")).await;
    }
    let before = server.metric(BUILT).await;
    let first = server.snapshot_pages().await;
    assert_eq!(first.len(), 3, "five keys in pages of two");
    for _ in 0..2 {
        let again = server.snapshot_pages().await;
        let bodies = |pages: &[(Reply, _)]| pages.iter().map(|(r, _)| r.bytes.clone()).collect();
        let (a, b): (Vec<_>, Vec<_>) = (bodies(&first), bodies(&again));
        assert_eq!(a, b);
    }
    assert_eq!(server.metric(BUILT).await - before, 3, "each page once");

    let (added, _) = create_key(&server, &t.key, "k4").await;
    let moved = server.snapshot_pages().await;
    let version = moved[0].1.version;
    assert!(version > first[0].1.version);
    let table = common::assemble(&moved);
    assert_eq!(table.len(), 6);
    assert!(table.get(&hash(&added)).is_some(), "the new key is in");
    assert_eq!(table.version(), version);
    assert_eq!(server.metric(BUILT).await - before, 6, "built again once");
}

/// A plane limited to tenant A and the shared token asking the same page
/// and the same delta at the same version: each gets its own view, in
/// either order.
#[tokio::test]
async fn a_limited_plane_and_the_shared_token_never_share_an_answer() {
    let server = Server::start_with(&["--feed-page-keys", "2"]).await;
    let (a, b) = (
        server.create_tenant("a").await,
        server.create_tenant("b").await,
    );
    create_key(&server, &a.key, "a1").await;
    create_key(&server, &b.key, "b1").await;
    let body = json!({"name": "a-only", "tenants": [a.id]}).to_string();
    let plane = server
        .operator("POST", "/operator/v1/data-planes", Some(&body))
        .await;
    assert_eq!(plane.status, 201, "{}", plane.text());
    let token = plane.json()["token"].as_str().unwrap().to_string();
    let version = server.feed("").await.version();

    let a_keys = snapshot_hashes(&server, &token).await;
    let all = snapshot_hashes(&server, FEED_TOKEN).await;
    assert_eq!(a_keys.len(), 2, "A's admin key and a1");
    assert_eq!(all.len(), 4);
    assert!(a_keys.is_subset(&all));
    assert_eq!(snapshot_hashes(&server, &token).await, a_keys);

    let (b2, _) = create_key(&server, &b.key, "b2").await;
    let shared = server.feed(&format!("since={version}")).await;
    let limited = feed_with(&server, &token, &format!("since={version}")).await;
    assert_eq!(shared.version(), limited.version());
    assert_eq!(
        raw_ops(&shared.bytes).1.len(),
        1,
        "the shared token sees b2"
    );
    assert!(raw_ops(&shared.bytes).1.iter().any(|op| match op {
        RawOp::Upsert(e) => e.hash == hash(&b2),
        RawOp::Remove(_) => false,
    }));
    assert_eq!(raw_ops(&limited.bytes).1, vec![], "the plane does not");
}
