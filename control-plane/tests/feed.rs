//! The key table feed (docs/feed-protocol.md) against the real server:
//! token, snapshots and their pages, 304, ETag, long-poll wake-up, delta
//! contents (also over pages read at different versions), compacted log,
//! expiry retention, writes by the admin CLI, and the feed's counters on
//! `/metrics`.

// Test code: a failed unwrap or assertion is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{
    assemble, eventually, hash, hex, now, page_entries, raw_ops, rfc3339, snapshot, Server,
    FEED_TOKEN,
};
use keygate::feed::{check_snapshot_page, RawOp};
use keygate::key::Environment;
use keygate::table::{decode, Update};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn the_feed_needs_the_token() {
    let server = Server::start().await;
    for token in [None, Some("wrong-token"), Some("rk_live_notthetoken")] {
        let reply = server.call("GET", "/v1/key-table", token, None).await;
        assert_eq!(reply.status, 401);
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Bearer realm=\"keygate\"")
        );
        assert_eq!(reply.json()["error"]["type"], "unauthorized");
    }
    // An API key is not the feed token, even an all-scope one.
    let t = server.create_tenant("acme").await;
    assert_eq!(
        server
            .call("GET", "/v1/key-table", Some(&t.key), None)
            .await
            .status,
        401
    );
    assert_eq!(
        server
            .call("GET", "/v1/key-table", Some(FEED_TOKEN), None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn bad_since_or_wait_is_a_400_naming_it() {
    let server = Server::start().await;
    for (query, field) in [
        ("since=abc", "since"),
        ("since=-1", "since"),
        ("wait=x", "wait"),
        ("since=1&wait=61", "wait"),
    ] {
        let reply = server.feed(query).await;
        assert_eq!(reply.status, 400, "{query}");
        assert_eq!(reply.json()["error"]["field"], field, "{query}");
    }
}

#[tokio::test]
async fn a_snapshot_holds_every_live_key_with_what_it_may_do() {
    let server = Server::start().await;
    let empty = server.feed("").await;
    assert_eq!(empty.status, 200);
    assert!(empty.version() >= 1, "the empty table has a version too");
    assert!(snapshot(&empty.bytes).is_empty());

    let t = server.create_tenant("acme").await;
    server.set_plan(&t.id, "pro").await;
    let expires = now() + 3600;
    let made = server
        .create_key(
            &t.key,
            json!({"name": "k", "scopes": ["memory:read", "users:write"], "environment": "test",
                                   "rate_limit_tier": "pro", "expires_at": rfc3339(expires)}),
        )
        .await;
    let revoked = server
        .create_key(&t.key, json!({"name": "gone", "scopes": ["memory:read"]}))
        .await;
    let path = format!("/api/v1/api-keys/{}", revoked["id"].as_str().unwrap());
    assert_eq!(
        server
            .call("DELETE", &path, Some(&t.key), None)
            .await
            .status,
        200
    );

    let reply = server.feed("since=0").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("application/x-keygate-table")
    );
    let version = reply.version();
    assert_eq!(
        reply.header("etag"),
        Some(format!("\"{version}\"").as_str())
    );
    assert!(version > empty.version());
    let table = snapshot(&reply.bytes);
    assert_eq!(table.version(), version);
    assert_eq!(
        table.len(),
        2,
        "the first key and the new one; not the revoked one"
    );
    let record = table
        .get(&hash(made["api_key"].as_str().unwrap()))
        .expect("new key in the table");
    assert_eq!(record.key_id.to_string(), made["id"].as_str().unwrap());
    assert_eq!(record.org_id.to_string(), t.id);
    assert_eq!(record.scopes, "memory:read users:write");
    assert_eq!(record.tier, "pro");
    assert_eq!(record.environment, Environment::Test);
    assert_eq!(record.expires_at, expires);
    let first = table.get(&hash(&t.key)).expect("tenant's first key");
    assert_eq!(first.expires_at, 0);
    assert!(table
        .get(&hash(revoked["api_key"].as_str().unwrap()))
        .is_none());
}

/// The kind byte of a feed body (1 snapshot or last page, 2 delta, 3 page
/// with more to follow).
fn kind(body: &[u8]) -> u8 {
    body[4]
}

/// Creates `n` keys with `admin`; returns the full keys.
async fn create_keys(server: &Server, admin: &str, n: usize) -> Vec<String> {
    let mut keys = Vec::with_capacity(n);
    for i in 0..n {
        let body = json!({"name": format!("k{i}"), "scopes": ["memory:read"]});
        let made = server.create_key(admin, body).await;
        keys.push(made["api_key"].as_str().unwrap().to_string());
    }
    keys
}

/// With two keys a page, five keys travel as three pages (kinds 3, 3, 1) in
/// ascending hash order, each page after the last hash of the one before
/// and carrying the version it was read at.
#[tokio::test]
async fn a_snapshot_travels_in_pages_in_hash_order() {
    let server = Server::start_with(&["--feed-page-keys", "2"]).await;
    let t = server.create_tenant("acme").await;
    let mut keys = create_keys(&server, &t.key, 4).await;
    keys.push(t.key.clone());

    let pages = server.snapshot_pages().await;
    let kinds: Vec<u8> = pages.iter().map(|(reply, _)| kind(&reply.bytes)).collect();
    assert_eq!(kinds, [3, 3, 1]);
    let sizes: Vec<usize> = pages.iter().map(|(_, page)| page.keys).collect();
    assert_eq!(sizes, [2, 2, 1]);
    let sent: Vec<[u8; 32]> = pages
        .iter()
        .flat_map(|(reply, _)| page_entries(&reply.bytes))
        .map(|e| e.hash)
        .collect();
    let mut all: Vec<[u8; 32]> = keys.iter().map(|k| hash(k)).collect();
    all.sort_unstable();
    assert_eq!(sent, all, "every key once, in ascending hash order");
    let version = pages[0].1.version;
    for (reply, page) in &pages {
        // Nothing was written meanwhile: every page is at the same version.
        assert_eq!(page.version, version);
        assert_eq!(reply.version(), version);
        assert_eq!(
            reply.header("etag"),
            Some(format!("\"{version}\"").as_str())
        );
        assert_eq!(
            reply.header("content-type"),
            Some("application/x-keygate-table")
        );
    }
    let table = assemble(&pages);
    assert_eq!((table.len(), table.version()), (5, version));
    for key in &keys {
        assert!(table.get(&hash(key)).is_some(), "{}", &key[..12]);
    }

    // A base newer than the table gets the first page; a page ignores
    // `wait` (answered at once).
    let start = Instant::now();
    let ahead = server
        .feed(&format!("since={}&wait=30", version + 100))
        .await;
    assert_eq!(ahead.bytes, pages[0].0.bytes);
    let after = hex(&pages[0].1.last_hash.unwrap());
    let second = server.feed(&format!("since=0&after={after}&wait=30")).await;
    assert_eq!(second.bytes, pages[1].0.bytes);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "pages do not wait"
    );
    // After the last key: an empty last page.
    let end = server.feed(&format!("after={}", "ff".repeat(32))).await;
    assert_eq!(end.status, 200);
    let page = check_snapshot_page(&end.bytes, None).unwrap();
    assert_eq!((kind(&end.bytes), page.keys, page.version), (1, 0, version));
    // Each page counts as a snapshot answer.
    assert_eq!(server.metric(&answers("snapshot")).await, 6);
}

/// Pages read at different versions, then the delta since the smallest of
/// them, make exactly the current table: a key revoked after its page went
/// out leaves by that delta.
#[tokio::test]
async fn a_key_revoked_between_pages_leaves_by_the_delta_since_the_first_page() {
    let server = Server::start_with(&["--feed-page-keys", "2"]).await;
    let t = server.create_tenant("acme").await;
    let keys = create_keys(&server, &t.key, 4).await;

    let first = server.feed("since=0").await;
    let page = check_snapshot_page(&first.bytes, None).unwrap();
    assert!(page.more);
    let in_first: Vec<[u8; 32]> = page_entries(&first.bytes).iter().map(|e| e.hash).collect();
    // Revoke a key the first page holds, and one a later page would hold.
    let sent = keys.iter().find(|k| in_first.contains(&hash(k))).unwrap();
    let unsent = keys.iter().find(|k| !in_first.contains(&hash(k))).unwrap();
    for key in [sent, unsent] {
        let me = server.call("GET", "/api/v1/auth/me", Some(key), None).await;
        let path = format!(
            "/api/v1/api-keys/{}",
            me.json()["key"]["id"].as_str().unwrap()
        );
        let reply = server.call("DELETE", &path, Some(&t.key), None).await;
        assert_eq!(reply.status, 200);
    }
    let added = create_keys(&server, &t.key, 1).await.remove(0);

    let pages = server.more_pages(vec![(first, page)]).await;
    let min = pages.iter().map(|(_, p)| p.version).min().unwrap();
    assert_eq!(min, page.version);
    assert!(pages.iter().skip(1).all(|(_, p)| p.version > min));
    let mut table = assemble(&pages);
    assert!(
        table.get(&hash(sent)).is_some(),
        "the first page still has it"
    );
    assert!(
        table.get(&hash(unsent)).is_none(),
        "revoked before its page"
    );

    let reply = server.feed(&format!("since={min}")).await;
    assert_eq!(reply.status, 200);
    let (header, ops) = raw_ops(&reply.bytes);
    assert!(!header.snapshot);
    assert_eq!(header.base, min);
    assert!(ops.contains(&RawOp::Remove(hash(sent))), "{ops:?}");
    match decode(&reply.bytes).unwrap() {
        Update::Delta(delta) => table.apply(&delta).unwrap(),
        Update::Snapshot(_) => panic!("expected a delta"),
    }
    let fresh = assemble(&server.snapshot_pages().await);
    assert_eq!(table.version(), fresh.version());
    assert_eq!(table.len(), fresh.len());
    assert_eq!(
        table.len(),
        4,
        "the first key, two of the four, the added one"
    );
    for key in keys.iter().chain([&t.key, &added]) {
        assert_eq!(
            table.get(&hash(key)),
            fresh.get(&hash(key)),
            "{}",
            &key[..12]
        );
    }
    assert!(table.get(&hash(sent)).is_none());
    assert!(table.get(&hash(unsent)).is_none());
}

#[tokio::test]
async fn after_goes_with_since_zero_only_and_is_a_hash() {
    let server = Server::start().await;
    let hex = "ab".repeat(32);
    for query in [
        format!("since=5&after={hex}"),
        format!("after={hex}&since=1"),
        "after=".to_string(),
        "after=xyz".to_string(),
        format!("after={}", &hex[1..]),
        format!("after={hex}00"),
        format!("since=0&after={}zz", &hex[2..]),
    ] {
        let reply = server.feed(&query).await;
        assert_eq!(reply.status, 400, "{query}");
        let error = reply.json();
        assert_eq!(error["error"]["type"], "invalid_request", "{query}");
        assert_eq!(error["error"]["field"], "after", "{query}");
    }
    // A version in If-None-Match is a `since` too.
    let etag = server
        .call_with(
            "GET",
            &format!("/v1/key-table?after={hex}"),
            Some(FEED_TOKEN),
            None,
            &[("if-none-match", "\"5\"")],
        )
        .await;
    assert_eq!(etag.status, 400);
    assert_eq!(etag.json()["error"]["field"], "after");
    let ok = server.feed(&format!("since=0&after={hex}")).await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn unchanged_is_304_after_the_wait_and_by_etag() {
    let server = Server::start().await;
    server.create_tenant("acme").await;
    let version = server.feed("").await.version();

    let start = Instant::now();
    let reply = server.feed(&format!("since={version}&wait=1")).await;
    assert_eq!(reply.status, 304);
    assert!(reply.bytes.is_empty());
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "held for the wait"
    );
    assert_eq!(reply.version(), version);
    assert_eq!(
        reply.header("etag"),
        Some(format!("\"{version}\"").as_str())
    );

    let etag = format!("\"{version}\"");
    let by_etag = server
        .call_with(
            "GET",
            "/v1/key-table",
            Some(FEED_TOKEN),
            None,
            &[("if-none-match", &etag)],
        )
        .await;
    assert_eq!(by_etag.status, 304);
    let no_wait = server.feed(&format!("since={version}")).await;
    assert_eq!(no_wait.status, 304);
}

#[tokio::test]
async fn a_long_poll_wakes_as_soon_as_a_revoke_commits() {
    let server = Server::start().await;
    let t = server.create_tenant("acme").await;
    let made = server
        .create_key(&t.key, json!({"name": "k", "scopes": ["memory:read"]}))
        .await;
    let key = made["api_key"].as_str().unwrap().to_string();
    let version = server.feed("").await.version();

    let poll = async {
        let reply = server.feed(&format!("since={version}&wait=30")).await;
        (reply, Instant::now())
    };
    let revoke = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let path = format!("/api/v1/api-keys/{}", made["id"].as_str().unwrap());
        let reply = server.call("DELETE", &path, Some(&t.key), None).await;
        assert_eq!(reply.status, 200);
        Instant::now()
    };
    let ((reply, answered_at), revoked_at) = tokio::join!(poll, revoke);
    let latency = answered_at.saturating_duration_since(revoked_at);
    assert_eq!(reply.status, 200);
    assert!(reply.version() > version);
    let (header, ops) = raw_ops(&reply.bytes);
    assert!(!header.snapshot);
    assert_eq!(header.base, version);
    assert_eq!(ops, vec![RawOp::Remove(hash(&key))]);
    // Far below the 30 s wait: the answer follows the commit, not a timer.
    assert!(latency < Duration::from_secs(5), "woke after {latency:?}");
    eprintln!("long-poll answered {latency:?} after the revoke's 200");
}

#[tokio::test]
async fn deltas_carry_the_current_state_of_every_changed_key() {
    let server = Server::start().await;
    let t = server.create_tenant("acme").await;
    server.set_plan(&t.id, "pro").await;
    let base = server.feed("").await;
    let mut table = snapshot(&base.bytes);

    let a = server
        .create_key(&t.key, json!({"name": "a", "scopes": ["memory:read"]}))
        .await;
    let b = server
        .create_key(
            &t.key,
            json!({"name": "b", "scopes": ["users:read"], "rate_limit_tier": "pro"}),
        )
        .await;
    let b_path = format!("/api/v1/api-keys/{}", b["id"].as_str().unwrap());
    assert_eq!(
        server
            .call("DELETE", &b_path, Some(&t.key), None)
            .await
            .status,
        200
    );
    let rotate = format!("/api/v1/api-keys/{}/rotate", a["id"].as_str().unwrap());
    let rotated = server
        .call(
            "POST",
            &rotate,
            Some(&t.key),
            Some(r#"{"grace_seconds":600}"#),
        )
        .await
        .json();

    let reply = server.feed(&format!("since={}", base.version())).await;
    assert_eq!(reply.status, 200);
    let (header, ops) = raw_ops(&reply.bytes);
    assert!(!header.snapshot);
    assert_eq!(header.base, base.version());
    assert_eq!(header.version, reply.version());
    // One op per key: a (upsert, now expiring), b (remove), the rotated key (upsert).
    assert_eq!(ops.len(), 3, "{ops:?}");
    let a_hash = hash(a["api_key"].as_str().unwrap());
    let upsert_a = ops.iter().find_map(|op| match op {
        RawOp::Upsert(e) if e.hash == a_hash => Some(*e),
        _ => None,
    });
    let a_expiry = upsert_a.expect("a is upserted").expires_at;
    assert!(
        a_expiry >= now() + 590 && a_expiry <= now() + 600,
        "{a_expiry}"
    );
    assert!(ops.contains(&RawOp::Remove(hash(b["api_key"].as_str().unwrap()))));

    // Applied to the old table, the delta gives the table of a fresh snapshot.
    match decode(&reply.bytes).unwrap() {
        Update::Delta(delta) => table.apply(&delta).unwrap(),
        Update::Snapshot(_) => panic!("expected a delta"),
    }
    let fresh = snapshot(&server.feed("").await.bytes);
    assert_eq!(table.version(), fresh.version());
    assert_eq!(table.len(), fresh.len());
    for key in [
        &t.key,
        a["api_key"].as_str().unwrap(),
        rotated["api_key"].as_str().unwrap(),
    ] {
        assert_eq!(
            table.get(&hash(key)),
            fresh.get(&hash(key)),
            "{}",
            &key[..12]
        );
        assert!(table.get(&hash(key)).is_some());
    }
    assert!(table.get(&hash(b["api_key"].as_str().unwrap())).is_none());
}

#[tokio::test]
async fn a_base_older_than_the_log_or_newer_than_the_table_gets_a_snapshot() {
    let server = Server::start_with(&["--revisions-kept", "2"]).await;
    let t = server.create_tenant("acme").await;
    let old = server.feed("").await.version();
    for i in 0..5 {
        server
            .create_key(
                &t.key,
                json!({"name": format!("k{i}"), "scopes": ["memory:read"]}),
            )
            .await;
    }
    // Compaction runs once a second; each try writes, so no cached body answers.
    let mut keys = 6;
    let compacted = eventually(Duration::from_secs(20), || {
        keys += 1;
        let name = format!("k{keys}");
        let (server, admin) = (&server, &t.key);
        async move {
            server
                .create_key(admin, json!({"name": name, "scopes": ["memory:read"]}))
                .await;
            let reply = server.feed(&format!("since={old}")).await;
            raw_ops(&reply.bytes).0.snapshot
        }
    })
    .await;
    assert!(
        compacted,
        "a base older than the kept revisions gets a snapshot"
    );
    let old_reply = server.feed(&format!("since={old}")).await;
    assert_eq!(snapshot(&old_reply.bytes).len(), keys);
    let current = old_reply.version();
    let recent = current - 1;

    let (header, ops) = raw_ops(&server.feed(&format!("since={recent}")).await.bytes);
    assert!(!header.snapshot, "a recent base still gets a delta");
    assert_eq!(ops.len(), 1);

    let ahead = server.feed(&format!("since={}", current + 100)).await;
    assert_eq!(ahead.status, 200);
    assert_eq!(snapshot(&ahead.bytes).version(), current);
}

#[tokio::test]
async fn expired_keys_stay_for_the_retention_then_leave_the_table() {
    let server = Server::start_with(&["--expired-retention-seconds", "2"]).await;
    let t = server.create_tenant("acme").await;
    let expires = now() + 2;
    let made = server
        .create_key(
            &t.key,
            json!({"name": "brief", "scopes": ["memory:read"], "expires_at": rfc3339(expires)}),
        )
        .await;
    let h = hash(made["api_key"].as_str().unwrap());
    let version = server.feed("").await.version();

    // Past its expiry (but within retention) the filter still knows it, so it
    // can answer "API key has expired".
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let table = snapshot(&server.feed("").await.bytes);
    if now() < expires + 2 {
        let record = table.get(&h).expect("kept during the retention");
        assert!(record.is_expired(now()));
    }
    // Then a remove revision takes it out.
    let left = eventually(Duration::from_secs(20), || async {
        snapshot(&server.feed("").await.bytes).get(&h).is_none()
    })
    .await;
    assert!(left, "the expired key left the table");
    let reply = server.feed(&format!("since={version}")).await;
    let (_, ops) = raw_ops(&reply.bytes);
    assert_eq!(ops, vec![RawOp::Remove(h)]);
    // The tenant's first key (no expiry) stays.
    assert!(snapshot(&server.feed("").await.bytes)
        .get(&hash(&t.key))
        .is_some());
}

#[tokio::test]
async fn writes_by_the_admin_cli_reach_a_waiting_filter() {
    let server = Server::start().await;
    let t = server.create_tenant("acme").await;
    let version = server.feed("").await.version();
    let query = format!("since={version}&wait=30");
    let poll = server.feed(&query);
    let write = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let args = [
            "key",
            "create",
            "--tenant",
            &t.id,
            "--name",
            "cli",
            "--scopes",
            "memory:read",
        ];
        let command = server.admin_command(&args);
        let mut command = command;
        let out = tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (Instant::now(), v["api_key"].as_str().unwrap().to_string())
    };
    let (reply, (written_at, key)) = tokio::join!(poll, write);
    assert_eq!(reply.status, 200);
    assert!(written_at.elapsed() < Duration::from_secs(10));
    let (_, ops) = raw_ops(&reply.bytes);
    assert!(
        matches!(ops.as_slice(), [RawOp::Upsert(e)] if e.hash == hash(&key)),
        "{ops:?}"
    );
}

const WAITING: &str = "keygate_feed_waiting";

/// `keygate_feed_requests_total` for one answer kind.
fn answers(kind: &str) -> String {
    format!("keygate_feed_requests_total{{answer=\"{kind}\"}}")
}

/// Every answer kind moves its own counter, by one per answer.
#[tokio::test]
async fn metrics_count_each_answer_kind() {
    let server = Server::start().await;
    let kinds = [
        "snapshot",
        "delta",
        "not_modified",
        "unauthorized",
        "bad_request",
    ];
    for kind in kinds {
        assert_eq!(server.metric(&answers(kind)).await, 0, "{kind}");
    }
    let empty = server.feed("").await.version();
    server.create_tenant("acme").await;
    let delta = server.feed(&format!("since={empty}")).await;
    assert!(!raw_ops(&delta.bytes).0.snapshot);
    let current = delta.version();
    assert_eq!(server.feed(&format!("since={current}")).await.status, 304);
    assert_eq!(server.feed("since=x").await.status, 400);
    let no_token = server.call("GET", "/v1/key-table", None, None).await;
    assert_eq!(no_token.status, 401);
    for kind in kinds {
        assert_eq!(server.metric(&answers(kind)).await, 1, "{kind}");
    }
    assert_eq!(server.metric("keygate_feed_version").await, current);
    assert_eq!(server.metric(WAITING).await, 0);
}

/// A held long-poll is `keygate_feed_waiting 1` until it is answered, or
/// until its client hangs up.
#[tokio::test]
async fn metrics_show_held_long_polls() {
    let server = Server::start().await;
    let t = server.create_tenant("acme").await;
    let version = server.feed("").await.version();
    let held = || async { server.metric(WAITING).await == 1 };

    let query = format!("since={version}&wait=30");
    let poll = server.feed(&query);
    let write = async {
        assert!(eventually(Duration::from_secs(10), held).await, "not held");
        let body = json!({"name": "k", "scopes": ["memory:read"]});
        server.create_key(&t.key, body).await;
    };
    let (reply, ()) = tokio::join!(poll, write);
    assert_eq!(reply.status, 200);
    assert_eq!(server.metric(WAITING).await, 0, "answered, no longer held");
    assert_eq!(server.metric(&answers("delta")).await, 1);
    let current = reply.version();
    assert_eq!(server.metric("keygate_feed_version").await, current);

    // A client that hangs up mid-wait is no longer counted either.
    let query = format!("since={current}&wait=30");
    let hung_up = server.feed(&query);
    let gone = async {
        assert!(eventually(Duration::from_secs(10), held).await, "not held");
    };
    tokio::select! {
        _ = hung_up => panic!("answered a 30 s long-poll early"),
        () = gone => {}
    }
    let released = || async { server.metric(WAITING).await == 0 };
    assert!(
        eventually(Duration::from_secs(10), released).await,
        "a hung-up long-poll is still counted"
    );
}

/// The key set of a feed answer, from its header (checked against the body).
fn key_set_of(reply: &common::Reply) -> keygate::feed::KeySet {
    let named = reply.header("x-keygate-key-set").unwrap();
    let id = keygate::feed::KeySet::from_hex(named).unwrap();
    if reply.status == 200 {
        assert_eq!(raw_ops(&reply.bytes).0.key_set, id, "header and body agree");
    }
    id
}

#[tokio::test]
async fn every_answer_names_the_key_set_made_with_the_database() {
    let mut server = Server::start().await;
    let t = server.create_tenant("acme").await;
    let first = server.feed("").await;
    let ours = key_set_of(&first);
    let version = first.version();
    let current = format!("since={version}&key_set={ours}");
    let unchanged = server.feed(&current).await;
    assert_eq!((unchanged.status, key_set_of(&unchanged)), (304, ours));

    // Another key set's `since`, even the current version, gets the first page.
    let other = keygate::feed::KeySet([0xee; 16]);
    for query in [
        format!("since={version}&key_set={other}&wait=5"),
        format!("since=0&after={}&key_set={other}", "ff".repeat(32)),
    ] {
        let start = Instant::now();
        let reply = server.feed(&query).await;
        assert_eq!(reply.status, 200, "{query}");
        assert!(start.elapsed() < Duration::from_secs(2), "{query}: held");
        let page = check_snapshot_page(&reply.bytes, None).unwrap();
        assert_eq!((page.key_set, page.keys), (ours, 1), "{query}");
    }
    server
        .create_key(&t.key, json!({"name": "k", "scopes": ["memory:read"]}))
        .await;
    let delta = server.feed(&current).await;
    assert!(!raw_ops(&delta.bytes).0.snapshot);
    assert_eq!(key_set_of(&delta), ours);

    // The id lives in the database: the same after a restart...
    server.kill9();
    server.restart().await;
    assert_eq!(key_set_of(&server.feed("").await), ours);
    // ...and a database made before key sets gets one on its next open.
    server.kill9();
    // (Its key set row deleted: dropping the table and the migration record
    // instead would re-run the later migrations' ALTER TABLEs on columns
    // that exist, which a database made before key sets never has.)
    server.sql("DELETE FROM key_set").await;
    server.restart().await;
    let migrated = key_set_of(&server.feed("").await);
    assert_ne!(migrated, ours, "a fresh id");
    server.kill9();
    server.restart().await;
    assert_eq!(key_set_of(&server.feed("").await), migrated, "kept");
    // A new database has its own.
    let fresh = Server::start().await;
    assert_ne!(key_set_of(&fresh.feed("").await), ours);
}

#[tokio::test]
async fn bad_key_set_or_client_is_a_400_naming_it() {
    let server = Server::start().await;
    for (query, field) in [
        ("key_set=zz", "key_set"),
        ("since=1&key_set=0123", "key_set"),
        ("client=", "client"),
        ("client=a%20b", "client"),
    ] {
        let reply = server.feed(query).await;
        assert_eq!(reply.status, 400, "{query}");
        assert_eq!(
            reply.json()["error"]["field"],
            field,
            "{query}: {}",
            reply.text()
        );
    }
}

#[tokio::test]
async fn a_revocation_waits_for_connected_clients_up_to_the_timeout() {
    let server = Server::start_with(&["--propagation-timeout-ms", "400"]).await;
    let t = server.create_tenant("acme").await;
    let revoke = |id: String| {
        let server = &server;
        let key = t.key.clone();
        async move {
            let start = Instant::now();
            let path = format!("/api/v1/api-keys/{id}");
            let reply = server.call("DELETE", &path, Some(&key), None).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            (reply.json()["propagated"].clone(), start.elapsed())
        }
    };
    let mint =
        |name: &str| server.create_key(&t.key, json!({"name": name, "scopes": ["memory:read"]}));
    let doomed = mint("a").await["id"].as_str().unwrap().to_string();
    let (alone, took) = revoke(doomed).await;
    assert_eq!(alone, json!({"envoys": 0, "reached": 0}));
    assert!(took < Duration::from_millis(300), "{took:?}");

    // A client that polled once and acknowledges the revocation on its next poll.
    let first = server.feed("client=envoy-1").await;
    let ours = key_set_of(&first);
    let doomed = mint("b").await["id"].as_str().unwrap().to_string();
    let acking = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let version = server.feed("").await.version();
        server
            .feed(&format!("since={version}&key_set={ours}&client=envoy-1"))
            .await
    };
    let ((reached, took), _) = tokio::join!(revoke(doomed), acking);
    // Reached before the timeout, which would have said `"reached": 0`.
    assert_eq!(reached, json!({"envoys": 1, "reached": 1}));
    assert!(took >= Duration::from_millis(90), "{took:?}");

    // It stops polling: the next revocation waits the timeout and says so.
    let doomed = mint("c").await["id"].as_str().unwrap().to_string();
    let (missed, took) = revoke(doomed).await;
    assert_eq!(missed, json!({"envoys": 1, "reached": 0}));
    assert!(took >= Duration::from_millis(390), "{took:?}");
    // So did the creations of b and c (SPEC §16: grants wait too), which
    // the client never acknowledged either.
    assert_eq!(server.metric("keygate_propagation_timeouts_total").await, 3);
    assert_eq!(server.metric("keygate_feed_envoys").await, 1);
    println!(
        "revocation with nobody connected: {alone}; with a silent client: {missed} after {took:?}"
    );
}
