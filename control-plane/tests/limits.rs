//! A key's own rate limits and owner (`rate_limits`, `external_id`) and a
//! tenant's suspension: checked on create (400 naming the field), shown in
//! every key view, carried by the key table feed; `tenant suspend|resume`
//! moves every key of the tenant in one delta. On either backend
//! (`KEYGATE_TEST_BACKEND=postgres`).

// Test code: a failed unwrap or assertion is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{assemble, hash, raw_ops, Server};
use keygate::feed::{KeyStatus, RawOp};
use keygate::limits::RateLimits;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn key_body(extra: Value) -> Value {
    let mut body = json!({"name": "k", "scopes": ["memory:read"]});
    for (name, value) in extra.as_object().unwrap() {
        body[name] = value.clone();
    }
    body
}

#[tokio::test]
async fn bad_limits_and_owners_are_400s_naming_the_field() {
    let server = Server::start().await;
    let admin = server.create_tenant("acme").await.key;
    let cases = [
        (
            json!({"rate_limits": {"per_minute": 0}}),
            "rate_limits.per_minute",
        ),
        (
            json!({"rate_limits": {"per_minute": -1}}),
            "rate_limits.per_minute",
        ),
        (
            json!({"rate_limits": {"per_minute": "60"}}),
            "rate_limits.per_minute",
        ),
        (
            json!({"rate_limits": {"per_day": 0}}),
            "rate_limits.per_day",
        ),
        (
            json!({"rate_limits": {"per_day": 1.5}}),
            "rate_limits.per_day",
        ),
        (
            json!({"rate_limits": {"per_day": 4_294_967_296u64}}),
            "rate_limits.per_day",
        ),
        (
            json!({"rate_limits": {"per_hour": 5}}),
            "rate_limits.per_hour",
        ),
        (json!({"rate_limits": 60}), "rate_limits"),
        (json!({"external_id": ""}), "external_id"),
        (json!({"external_id": "user 1"}), "external_id"),
        (json!({"external_id": "ünïcode"}), "external_id"),
        (json!({"external_id": "x".repeat(129)}), "external_id"),
        (json!({"external_id": 42}), "external_id"),
    ];
    for (extra, field) in cases {
        let body = key_body(extra.clone()).to_string();
        let reply = server
            .call("POST", "/api/v1/api-keys", Some(&admin), Some(&body))
            .await;
        assert_eq!(reply.status, 400, "{extra}: {}", reply.text());
        let error = &reply.json()["error"];
        assert_eq!(error["type"], "invalid_request", "{extra}");
        assert_eq!(error["field"], field, "{extra}: {}", reply.text());
        assert!(error["message"].as_str().unwrap().contains(field));
    }
    let list = server
        .call("GET", "/api/v1/api-keys", Some(&admin), None)
        .await;
    assert_eq!(
        list.json()["data"].as_array().unwrap().len(),
        1,
        "nothing written"
    );
}

#[tokio::test]
async fn limits_and_owner_are_shown_in_every_view_and_travel_in_the_feed() {
    let server = Server::start().await;
    let admin = server.create_tenant("acme").await.key;
    let owner = "x".repeat(128);
    let limited = server
        .create_key(
            &admin,
            key_body(json!({
                "rate_limits": {"per_minute": 60, "per_day": 10000},
                "external_id": owner,
            })),
        )
        .await;
    assert_eq!(
        limited["rate_limits"],
        json!({"per_minute": 60, "per_day": 10000})
    );
    assert_eq!(limited["external_id"], owner.as_str());
    let minute_only = server
        .create_key(
            &admin,
            key_body(json!({"rate_limits": {"per_minute": 5}, "external_id": "user-7"})),
        )
        .await;
    assert_eq!(
        minute_only["rate_limits"],
        json!({"per_minute": 5, "per_day": null})
    );
    let plain = server.create_key(&admin, key_body(json!({}))).await;
    assert_eq!(plain["rate_limits"], Value::Null);
    assert_eq!(plain["external_id"], Value::Null);
    let empty = server
        .create_key(&admin, key_body(json!({"rate_limits": {}})))
        .await;
    assert_eq!(empty["rate_limits"], Value::Null);

    let list = server
        .call("GET", "/api/v1/api-keys", Some(&admin), None)
        .await
        .json();
    let listed = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == limited["id"])
        .unwrap()
        .clone();
    assert_eq!(listed["rate_limits"], limited["rate_limits"]);
    assert_eq!(listed["external_id"], limited["external_id"]);
    let key = limited["api_key"].as_str().unwrap();
    let me = server
        .call("GET", "/api/v1/auth/me", Some(key), None)
        .await
        .json();
    assert_eq!(me["key"]["external_id"], owner.as_str());
    assert_eq!(me["key"]["rate_limits"]["per_day"], 10000);

    let table = assemble(&server.snapshot_pages().await);
    let record = table.get(&hash(key)).unwrap();
    assert_eq!(
        (record.limits, record.external_id, record.status),
        (
            RateLimits {
                per_minute: 60,
                per_day: 10000
            },
            Some(owner.as_str()),
            KeyStatus::Active
        )
    );
    let minute_key = minute_only["api_key"].as_str().unwrap();
    assert_eq!(table.get(&hash(minute_key)).unwrap().limits.per_day, 0);
    let plain = table
        .get(&hash(plain["api_key"].as_str().unwrap()))
        .unwrap();
    assert_eq!((plain.limits, plain.external_id), (RateLimits::NONE, None));

    // A rotation keeps the limits and the owner.
    let id = limited["id"].as_str().unwrap();
    let rotated = server
        .call(
            "POST",
            &format!("/api/v1/api-keys/{id}/rotate"),
            Some(&admin),
            Some("{}"),
        )
        .await
        .json();
    assert_eq!(rotated["rate_limits"], limited["rate_limits"]);
    assert_eq!(rotated["external_id"], limited["external_id"]);
}

/// The statuses of the keys of `hashes` in the delta since `since`, once
/// the server serves a version past it.
async fn statuses_since(
    server: &Server,
    since: u64,
    hashes: &[[u8; 32]],
) -> Vec<Option<KeyStatus>> {
    let start = Instant::now();
    let reply = loop {
        let reply = server.feed(&format!("since={since}")).await;
        if reply.status == 200 {
            break reply;
        }
        assert_eq!(reply.status, 304);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the change never came"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (header, ops) = raw_ops(&reply.bytes);
    assert!(!header.snapshot, "a delta");
    hashes
        .iter()
        .map(|h| {
            ops.iter().find_map(|op| match op {
                RawOp::Upsert(e) if e.hash == *h => Some(e.status),
                _ => None,
            })
        })
        .collect()
}

fn admin_json(server: &Server, args: &[&str]) -> Value {
    let out = server.admin(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn suspension_moves_every_key_of_the_tenant_and_resume_brings_them_back() {
    let server = Server::start().await;
    let acme = server.create_tenant("acme").await;
    let other = server.create_tenant("other").await;
    let second = server.create_key(&acme.key, key_body(json!({}))).await;
    let second = second["api_key"].as_str().unwrap().to_string();
    let hashes = [hash(&acme.key), hash(&second), hash(&other.key)];
    let before = server.feed("since=0").await.version();

    let suspended = admin_json(&server, &["tenant", "suspend", &acme.id]);
    assert_eq!(suspended["tenant_id"], acme.id.as_str());
    assert_eq!(suspended["suspended"], true);
    assert_eq!(suspended["keys_changed"], 2);
    assert_eq!(suspended["propagated"], json!({"envoys": 0, "reached": 0}));
    let moved = statuses_since(&server, before, &hashes).await;
    assert_eq!(
        moved,
        [
            Some(KeyStatus::OrgSuspended),
            Some(KeyStatus::OrgSuspended),
            None
        ],
        "both keys of the tenant, not the other tenant's"
    );
    let refused = server
        .call("GET", "/api/v1/auth/me", Some(&second), None)
        .await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.text(),
        r#"{"error":{"type":"forbidden","message":"Organization is suspended"}}"#
    );
    let fine = server
        .call("GET", "/api/v1/auth/me", Some(&other.key), None)
        .await;
    assert_eq!(fine.status, 200);
    let table = assemble(&server.snapshot_pages().await);
    assert_eq!(
        table.get(&hash(&acme.key)).unwrap().status,
        KeyStatus::OrgSuspended
    );

    let again = admin_json(&server, &["tenant", "suspend", &acme.id]);
    assert_eq!(again["keys_changed"], 0, "already suspended");

    let at = server.feed("since=0").await.version();
    let resumed = admin_json(&server, &["tenant", "resume", &acme.id]);
    assert_eq!(
        (
            resumed["suspended"].clone(),
            resumed["keys_changed"].clone()
        ),
        (json!(false), json!(2))
    );
    let moved = statuses_since(&server, at, &hashes).await;
    assert_eq!(
        moved,
        [Some(KeyStatus::Active), Some(KeyStatus::Active), None]
    );
    let back = server
        .call("GET", "/api/v1/auth/me", Some(&second), None)
        .await;
    assert_eq!(back.status, 200, "{}", back.text());

    let unknown = server.admin(&["tenant", "suspend", "org_00000000000000ff"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("Tenant not found"));
}

/// A database made before migration 0002 (schema 0001, with a tenant and a
/// key) migrates on open: the key keeps working, without limits or owner,
/// and its tenant can be suspended.
#[tokio::test]
async fn a_database_of_schema_0001_migrates() {
    if common::pg::selected() {
        return; // The PostgreSQL migrations run on every fresh test database.
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let key = keygate::key::generate("rk", keygate::key::Environment::Live).unwrap();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(include_str!("../migrations/sqlite/0001_schema.sql"))
            .unwrap();
        conn.execute_batch(
            "PRAGMA user_version = 1; \
             INSERT INTO tenants (id, name, email, created_at) VALUES (7, 'old', 'o@x.test', 1);",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO api_keys (id, tenant_id, name, key_hash, display_prefix, scopes, \
             environment, tier, created_at, in_table) \
             VALUES (9, 7, 'old key', ?1, ?2, 'tenant:admin', 'live', 'free', 1, 1)",
            rusqlite::params![hash(&key), keygate::key::display_prefix(&key)],
        )
        .unwrap();
    }
    let server = Server::start_on(path.to_str().unwrap(), &[]).await;
    let me = server
        .call("GET", "/api/v1/auth/me", Some(&key), None)
        .await;
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(me.json()["key"]["rate_limits"], Value::Null);
    assert_eq!(me.json()["key"]["external_id"], Value::Null);
    let suspended = admin_json(&server, &["tenant", "suspend", "org_0000000000000007"]);
    assert_eq!(suspended["keys_changed"], 1);
    let refused = server
        .call("GET", "/api/v1/auth/me", Some(&key), None)
        .await;
    assert_eq!(refused.status, 403);
}
