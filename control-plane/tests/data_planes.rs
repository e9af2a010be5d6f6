//! Data planes (SPEC §15) against the real server, on either backend: the
//! operator API (token shown once, never listed, bad input named, audit),
//! a plane limited to one tenant (snapshot pages, deltas, 304), its usage
//! of another tenant's key refused whole, revocation and rotation (a held
//! long-poll answered 401, the delivery wait no longer counting it), and
//! the usage token checked before the body is read. One test runs two
//! replicas on PostgreSQL whatever the backend: a revocation through one
//! answers the long-poll held by the other.

// Test code: a failed unwrap or assertion is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{eventually, hash, page_entries, pg, raw_ops, Reply, Server, FEED_TOKEN};
use keygate::feed::{check_snapshot_page, RawOp};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PLANES: &str = "/operator/v1/data-planes";

/// Registers a plane; asserts 201 and returns the answer (with its token).
async fn register(server: &Server, body: Value) -> Value {
    let reply = server
        .operator("POST", PLANES, Some(&body.to_string()))
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    reply.json()
}

/// `GET /v1/key-table?{query}` with `token`.
async fn feed_with(server: &Server, token: &str, query: &str) -> Reply {
    let path = format!("/v1/key-table?{query}");
    server.call("GET", &path, Some(token), None).await
}

/// Every page of a snapshot read with `token`, checked like a filter
/// checks them; the hashes of all their keys.
async fn snapshot_hashes(server: &Server, token: &str) -> BTreeSet<[u8; 32]> {
    let (mut hashes, mut after) = (BTreeSet::new(), None::<[u8; 32]>);
    loop {
        let query = match &after {
            None => "since=0".to_string(),
            Some(h) => format!("since=0&after={}", common::hex(h)),
        };
        let reply = feed_with(server, token, &query).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let page = check_snapshot_page(&reply.bytes, after.as_ref()).expect("a good page");
        hashes.extend(page_entries(&reply.bytes).iter().map(|e| e.hash));
        if !page.more {
            return hashes;
        }
        after = page.last_hash;
    }
}

fn key_set(reply: &Reply) -> String {
    reply.header("x-keygate-key-set").unwrap().to_string()
}

/// A usage batch of one `allowed` request for each of `keys`.
fn batch(id: u32, key_set: &str, keys: &[&str]) -> String {
    let minute = common::now() / 60 * 60 - 60;
    let keys: Vec<Value> = keys
        .iter()
        .map(|k| json!({"key_id": k, "outcomes": {"allowed": 1}}))
        .collect();
    json!({"batch_id": format!("{id:032x}"), "key_set": key_set,
           "minutes": [{"minute": minute, "keys": keys}]})
    .to_string()
}

#[tokio::test]
async fn the_operator_registers_lists_and_audits_planes_and_names_bad_fields() {
    let server = Server::start().await;
    let a = server.create_tenant("acme").await;
    let created = register(&server, json!({"name": "eu-1", "tenants": [a.id]})).await;
    let token = created["token"].as_str().unwrap();
    assert!(token.starts_with("kgdp_") && token.len() == 69, "{token}");
    assert_eq!(created["tenants"], json!([a.id]));
    assert_eq!(created["status"], "active");
    let id = created["id"].as_str().unwrap();

    let listed = server.operator("GET", PLANES, None).await;
    let one = server
        .operator("GET", &format!("{PLANES}/{id}"), None)
        .await;
    for reply in [&listed, &one] {
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert!(!reply.text().contains(token), "a token is shown once only");
    }
    assert_eq!(listed.json()["data"][0]["id"], id);
    assert_eq!(one.json()["name"], "eu-1");

    for (body, field) in [
        (json!({}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"name": "x", "tenants": []}), "tenants"),
        (
            json!({"name": "x", "tenants": ["org_0000000000000001"]}),
            "tenants[0]",
        ),
        (
            json!({"name": "x", "tenants": [a.id, "nope"]}),
            "tenants[1]",
        ),
        (json!({"name": "x", "colour": 1}), "colour"),
    ] {
        let reply = server
            .operator("POST", PLANES, Some(&body.to_string()))
            .await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.text());
        assert_eq!(reply.json()["error"]["field"], field, "{body}");
    }
    let rotate = format!("{PLANES}/{id}/rotate");
    let too_long = json!({"overlap_seconds": 8 * 24 * 3600}).to_string();
    let reply = server.operator("POST", &rotate, Some(&too_long)).await;
    assert_eq!(reply.json()["error"]["field"], "overlap_seconds");
    let unknown = format!("{PLANES}/dp_0000000000000000");
    assert_eq!(server.operator("GET", &unknown, None).await.status, 404);
    assert_eq!(
        server.call("GET", PLANES, Some(&a.key), None).await.status,
        401
    );
    let count = server.operator("GET", PLANES, None).await.json()["data"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(count, 1, "nothing half-applied");

    let log = server
        .call(
            "GET",
            "/api/v1/audit-log?action=data_plane.create",
            Some(&a.key),
            None,
        )
        .await;
    assert_eq!(log.status, 200, "{}", log.text());
    let entry = &log.json()["data"][0];
    assert_eq!(entry["changes"]["data_plane"], id);
    assert!(!log.text().contains(token));
}

#[tokio::test]
async fn a_limited_plane_sees_only_its_tenants_keys_in_pages_and_deltas() {
    let server = Server::start_with(&["--feed-page-keys", "2"]).await;
    let (a, b) = (
        server.create_tenant("acme").await,
        server.create_tenant("bravo").await,
    );
    let mut a_keys = vec![a.key.clone()];
    for _ in 0..3 {
        let body = json!({"name": "k", "scopes": ["memory:read"]});
        a_keys.push(
            server.create_key(&a.key, body.clone()).await["api_key"]
                .as_str()
                .unwrap()
                .into(),
        );
        server.create_key(&b.key, body).await;
    }
    let plane = register(&server, json!({"name": "a-only", "tenants": [a.id]})).await;
    let token = plane["token"].as_str().unwrap();

    let want: BTreeSet<[u8; 32]> = a_keys.iter().map(|k| hash(k)).collect();
    assert_eq!(
        snapshot_hashes(&server, token).await,
        want,
        "A's keys, all of them, only"
    );
    assert_eq!(
        snapshot_hashes(&server, FEED_TOKEN).await.len(),
        8,
        "the shared token sees all"
    );

    let at = feed_with(&server, token, "since=0").await;
    let (since, set) = (at.version(), key_set(&at));
    let current = format!("since={since}&key_set={set}");
    assert_eq!(feed_with(&server, token, &current).await.status, 304);

    // A change to B's key: an empty delta that moves the version.
    let b_new = server
        .create_key(&b.key, json!({"name": "b2", "scopes": ["memory:read"]}))
        .await;
    let delta = feed_with(&server, token, &current).await;
    assert_eq!(delta.status, 200);
    let (header, ops) = raw_ops(&delta.bytes);
    assert!(header.version > since && ops.is_empty(), "{ops:?}");
    let full = feed_with(&server, FEED_TOKEN, &current).await;
    assert_eq!(
        raw_ops(&full.bytes).1.len(),
        1,
        "the shared token gets B's key"
    );
    assert!(!delta
        .bytes
        .windows(32)
        .any(|w| w == hash(b_new["api_key"].as_str().unwrap())));

    // A change to A's key reaches it.
    let after_b = format!("since={}&key_set={set}", header.version);
    server
        .create_key(&a.key, json!({"name": "a2", "scopes": ["memory:read"]}))
        .await;
    let delta = feed_with(&server, token, &after_b).await;
    let ops = raw_ops(&delta.bytes).1;
    assert!(matches!(ops.as_slice(), [RawOp::Upsert(_)]), "{ops:?}");
}

#[tokio::test]
async fn usage_for_another_tenants_key_is_refused_whole() {
    let server = Server::start().await;
    let (a, b) = (
        server.create_tenant("acme").await,
        server.create_tenant("bravo").await,
    );
    let plane = register(&server, json!({"name": "a-only", "tenants": [a.id]})).await;
    let token = plane["token"].as_str().unwrap();
    let set = key_set(&server.feed("").await);

    let mixed = batch(1, &set, &[&a.key_id, &b.key_id]);
    let refused = server
        .call("POST", "/v1/usage", Some(token), Some(&mixed))
        .await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains(&b.key_id));
    // Nothing was counted: the same batch id is new to the shared token.
    let again = server
        .call("POST", "/v1/usage", Some(FEED_TOKEN), Some(&mixed))
        .await;
    assert_eq!(again.json()["duplicate"], false, "{}", again.text());

    let own = batch(2, &set, &[&a.key_id, "key_0123456789abcdef"]);
    let counted = server
        .call("POST", "/v1/usage", Some(token), Some(&own))
        .await;
    assert_eq!(counted.status, 200, "{}", counted.text());
    assert_eq!(counted.json()["unknown_keys"], 1);
}

#[tokio::test]
async fn revocation_answers_held_polls_401_and_drops_the_plane_from_delivery() {
    let server = Server::start().await;
    let a = server.create_tenant("acme").await;
    let plane = register(&server, json!({"name": "eu", "tenants": [a.id]})).await;
    let token = plane["token"].as_str().unwrap().to_string();
    let poll = held_poll(&server, &token).await;
    let revoke = format!("{PLANES}/{}", plane["id"].as_str().unwrap());
    let revoked = server.operator("DELETE", &revoke, None).await;
    let answered = Instant::now();
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    assert_eq!(revoked.json()["status"], "revoked");
    let (status, at) = poll.await.unwrap();
    assert_eq!(status, 401);
    assert!(at.saturating_duration_since(answered) < Duration::from_secs(1));
    assert_eq!(feed_with(&server, &token, "since=0").await.status, 401);
    let set = key_set(&server.feed("").await);
    let usage = batch(3, &set, &[&a.key_id]);
    assert_eq!(
        server
            .call("POST", "/v1/usage", Some(&token), Some(&usage))
            .await
            .status,
        401
    );

    // A key's revocation no longer waits for the revoked plane's Envoy.
    let path = format!("/api/v1/api-keys/{}", a.key_id);
    let gone = server.call("DELETE", &path, Some(&a.key), None).await;
    assert_eq!(
        gone.json()["propagated"],
        json!({"envoys": 0, "reached": 0})
    );
}

/// Holds a long-poll at `server` with `token`; resolves to its status and
/// when it came, once `server` shows it held.
async fn held_poll(server: &Server, token: &str) -> tokio::task::JoinHandle<(u16, Instant)> {
    let first = feed_with(server, token, "since=0").await;
    let query = format!(
        "since={}&key_set={}&wait=30&client=envoy-eu",
        first.version(),
        key_set(&first)
    );
    let (client, url) = (
        server.client.clone(),
        format!("{}/v1/key-table?{query}", server.base),
    );
    let token = token.to_string();
    let poll = tokio::spawn(async move {
        let reply = client.get(url).bearer_auth(token).send().await.unwrap();
        (reply.status().as_u16(), Instant::now())
    });
    assert!(
        eventually(Duration::from_secs(10), || async {
            server.metric("keygate_feed_waiting").await == 1
        })
        .await
    );
    poll
}

#[tokio::test]
async fn a_revocation_through_one_replica_answers_the_others_held_poll() {
    let database = pg::fresh_database().await;
    let one = Server::start_on(&database, &[]).await;
    let other = Server::start_on(&database, &[]).await;
    let plane = register(&one, json!({"name": "eu"})).await;
    let token = plane["token"].as_str().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            feed_with(&other, token, "").await.status == 200
        })
        .await,
        "the other replica learns of the plane"
    );
    let poll = held_poll(&other, token).await;
    let revoke = format!("{PLANES}/{}", plane["id"].as_str().unwrap());
    assert_eq!(one.operator("DELETE", &revoke, None).await.status, 200);
    let answered = Instant::now();
    let (status, at) = poll.await.unwrap();
    assert_eq!(status, 401);
    assert!(at.saturating_duration_since(answered) < Duration::from_secs(1));
}

#[tokio::test]
async fn rotation_keeps_the_old_token_for_the_overlap_only() {
    let server = Server::start().await;
    let plane = register(&server, json!({"name": "all"})).await;
    let old = plane["token"].as_str().unwrap().to_string();
    let rotate = format!("{PLANES}/{}/rotate", plane["id"].as_str().unwrap());
    let body = json!({"overlap_seconds": 2}).to_string();
    let rotated = server.operator("POST", &rotate, Some(&body)).await;
    assert_eq!(rotated.status, 201, "{}", rotated.text());
    let new = rotated.json()["token"].as_str().unwrap().to_string();
    assert!(rotated.json()["previous_token_expires_at"].is_string());
    assert_eq!(feed_with(&server, &new, "").await.status, 200);
    assert_eq!(
        feed_with(&server, &old, "").await.status,
        200,
        "the overlap"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            feed_with(&server, &old, "").await.status == 401
        })
        .await,
        "the old token ends with its overlap"
    );
    let now_rotated = server.operator("POST", &rotate, None).await;
    let newest = now_rotated.json()["token"].as_str().unwrap().to_string();
    assert_eq!(
        feed_with(&server, &new, "").await.status,
        401,
        "no overlap asked"
    );
    assert_eq!(feed_with(&server, &newest, "").await.status, 200);
}

#[tokio::test]
async fn the_usage_token_is_checked_before_the_body_is_read() {
    let server = Server::start().await;
    let address = server.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /v1/usage HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        32 * 1024 * 1024
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // Not one byte of the body is sent: the answer must come anyway.
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("answered without the body")
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..read]);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(text.contains("\"unauthorized\""), "{text}");
}
