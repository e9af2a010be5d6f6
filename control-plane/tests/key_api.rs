//! The key API of SPEC §10 against the real server, on either backend: GET
//! of one key, PATCH (every field, all-or-nothing, delivered when the filter
//! is concerned), metadata, the paginated list (cursor, filters, no
//! duplicates or gaps while keys are inserted) and their 400s and 404s.

// Test code: a failed unwrap or assertion is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{now, rfc3339, Reply, Server, Tenant};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// A 400 `invalid_request` naming `field` (in `field` and in the message).
fn assert_invalid(reply: &Reply, field: &str) {
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let v = reply.json();
    assert_eq!(v["error"]["type"], "invalid_request", "{v}");
    assert_eq!(v["error"]["field"], field, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains(field), "message {message:?} names {field}");
}

fn assert_not_found(reply: &Reply) {
    assert_eq!(reply.status, 404, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({"error": {"type": "not_found", "message": "API key not found"}})
    );
}

fn path(key: &Value) -> String {
    format!("/api/v1/api-keys/{}", key["id"].as_str().unwrap())
}

async fn patch(server: &Server, admin: &str, key: &Value, body: Value) -> Reply {
    let body = body.to_string();
    server
        .call("PATCH", &path(key), Some(admin), Some(&body))
        .await
}

async fn get(server: &Server, admin: &str, key: &Value) -> Value {
    let reply = server.call("GET", &path(key), Some(admin), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

/// The list page at `query`, asserting a 200.
async fn page(server: &Server, key: &str, query: &str) -> Value {
    let reply = server
        .call("GET", &format!("/api/v1/api-keys?{query}"), Some(key), None)
        .await;
    assert_eq!(reply.status, 200, "{query}: {}", reply.text());
    reply.json()
}

/// Every page at `limit` (and `filter`), following `next_cursor`: the ids.
async fn all_pages(server: &Server, key: &str, limit: usize, filter: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = format!("limit={limit}{filter}");
        if let Some(c) = &cursor {
            query.push_str(&format!("&cursor={c}"));
        }
        let v = page(server, key, &query).await;
        let data = v["data"].as_array().unwrap();
        assert!(data.len() <= limit, "{v}");
        ids.extend(data.iter().map(|k| k["id"].as_str().unwrap().to_string()));
        match v["next_cursor"].as_str() {
            Some(next) => {
                assert_eq!(data.len(), limit, "only a full page has a next one");
                cursor = Some(next.to_string());
            }
            None => return ids,
        }
    }
}

async fn tenant_and_key(server: &Server) -> (Tenant, Value) {
    let t = server.create_tenant("acme").await;
    let key = server
        .create_key(
            &t.key,
            json!({"name": "k", "scopes": ["memory:read"], "metadata": {"user": "u-1"}}),
        )
        .await;
    (t, key)
}

#[tokio::test]
async fn one_key_is_read_by_its_tenant_only() {
    let server = Server::start().await;
    let (t, key) = tenant_and_key(&server).await;
    let got = get(&server, &t.key, &key).await;
    let mut created = key.clone();
    created.as_object_mut().unwrap().remove("api_key");
    created.as_object_mut().unwrap().remove("propagated");
    assert_eq!(got, created);
    assert_eq!(got["metadata"], json!({"user": "u-1"}));
    assert!(got.get("api_key").is_none() && got.get("key_hash").is_none());

    // tenant:read is enough; a key without it is refused.
    let reader = server
        .create_key(&t.key, json!({"name": "r", "scopes": ["tenant:read"]}))
        .await;
    let reader_key = reader["api_key"].as_str().unwrap();
    assert_eq!(get(&server, reader_key, &key).await["id"], key["id"]);
    let plain = key["api_key"].as_str().unwrap();
    let refused = server.call("GET", &path(&key), Some(plain), None).await;
    assert_eq!(refused.status, 403, "{}", refused.text());

    let other = server.create_tenant("other").await;
    assert_not_found(
        &server
            .call("GET", &path(&key), Some(&other.key), None)
            .await,
    );
    let absent = "/api/v1/api-keys/key_0000000000000001";
    assert_not_found(&server.call("GET", absent, Some(&t.key), None).await);
    for bad in ["nonsense", "org_0000000000000001", "key_123"] {
        let reply = server
            .call(
                "GET",
                &format!("/api/v1/api-keys/{bad}"),
                Some(&t.key),
                None,
            )
            .await;
        assert_invalid(&reply, "id");
    }
}

#[tokio::test]
async fn metadata_is_a_small_object_shown_by_the_api_never_in_the_feed() {
    let server = Server::start().await;
    let t = server.create_tenant("acme").await;
    let marker = "metadata-marker-7f3a";
    let meta = json!({"plan": marker, "n": 3, "nested": {"ok": true}});
    let key = server
        .create_key(
            &t.key,
            json!({"name": "m", "scopes": ["memory:read"], "metadata": meta}),
        )
        .await;
    assert_eq!(key["metadata"], meta);
    let listed = page(&server, &t.key, "").await;
    assert_eq!(listed["data"][1]["metadata"], meta);
    let me = server
        .call("GET", "/api/v1/auth/me", key["api_key"].as_str(), None)
        .await
        .json();
    assert_eq!(me["key"]["metadata"], meta);
    let snapshot = server.feed("since=0").await;
    assert_eq!(snapshot.status, 200);
    assert!(!String::from_utf8_lossy(&snapshot.bytes).contains(marker));

    let big = json!({"blob": "x".repeat(1020)});
    for bad in [json!([1]), json!("text"), json!(7), big] {
        let body = json!({"name": "m", "scopes": ["memory:read"], "metadata": bad}).to_string();
        let reply = server
            .call("POST", "/api/v1/api-keys", Some(&t.key), Some(&body))
            .await;
        assert_invalid(&reply, "metadata");
    }
    // Exactly 1024 bytes serialized is allowed.
    let fits = json!({"b": "x".repeat(1024 - r#"{"b":""}"#.len())});
    assert_eq!(fits.to_string().len(), 1024);
    server
        .create_key(
            &t.key,
            json!({"name": "m", "scopes": ["memory:read"], "metadata": fits}),
        )
        .await;
}

#[tokio::test]
async fn patch_changes_every_field_and_moves_the_feed_only_when_it_must() {
    let server = Server::start().await;
    let (t, key) = tenant_and_key(&server).await;
    let version = || async { server.feed("since=0").await.version() };

    let before = version().await;
    let renamed = patch(
        &server,
        &t.key,
        &key,
        json!({"name": "renamed", "metadata": {"a": 1}}),
    )
    .await;
    assert_eq!(renamed.status, 200, "{}", renamed.text());
    let renamed = renamed.json();
    assert_eq!(renamed["name"], "renamed");
    assert_eq!(renamed["metadata"], json!({"a": 1}));
    assert!(renamed.get("propagated").is_none(), "{renamed}");
    assert_eq!(
        version().await,
        before,
        "name and metadata are not in the feed"
    );

    let expires = rfc3339(now() + 3600);
    let changed = patch(
        &server,
        &t.key,
        &key,
        json!({"scopes": ["memory:write", "users:read"], "rate_limit_tier": "free",
               "expires_at": expires, "metadata": null}),
    )
    .await;
    assert_eq!(changed.status, 200, "{}", changed.text());
    let changed = changed.json();
    assert_eq!(changed["scopes"], json!(["memory:write", "users:read"]));
    assert_eq!(changed["rate_limit_tier"], "free");
    assert_eq!(changed["expires_at"], expires.as_str());
    assert_eq!(changed["metadata"], Value::Null);
    assert_eq!(changed["name"], "renamed");
    assert_eq!(changed["propagated"], json!({"envoys": 0, "reached": 0}));
    assert!(
        version().await > before,
        "scopes, tier and expiry are in the feed"
    );
    assert_eq!(
        get(&server, &t.key, &key).await["scopes"],
        changed["scopes"]
    );
    // The filter's view: the key now holds the new scopes.
    let me = server
        .call("GET", "/api/v1/auth/me", key["api_key"].as_str(), None)
        .await
        .json();
    assert_eq!(me["key"]["scopes"], changed["scopes"]);

    let cleared = patch(&server, &t.key, &key, json!({"expires_at": null}))
        .await
        .json();
    assert_eq!(cleared["expires_at"], Value::Null);
    assert!(cleared.get("propagated").is_some());
    let same = patch(&server, &t.key, &key, json!({})).await;
    assert_eq!(same.status, 200, "{}", same.text());
}

#[tokio::test]
async fn a_rejected_patch_changes_nothing() {
    let server = Server::start().await;
    let (t, key) = tenant_and_key(&server).await;
    let before = get(&server, &t.key, &key).await;
    let version = server.feed("since=0").await.version();
    let past = rfc3339(now() - 10);
    let cases = [
        (json!({"name": "ok", "scopes": ["nope:read"]}), "scopes"),
        (json!({"name": "ok", "scopes": []}), "scopes"),
        (json!({"scopes": ["users:read"], "name": ""}), "name"),
        (json!({"scopes": ["users:read"], "name": null}), "name"),
        (
            json!({"scopes": ["users:read"], "rate_limit_tier": "gold"}),
            "rate_limit_tier",
        ),
        (
            json!({"scopes": ["users:read"], "rate_limit_tier": null}),
            "rate_limit_tier",
        ),
        (
            json!({"scopes": ["users:read"], "expires_at": past}),
            "expires_at",
        ),
        (
            json!({"scopes": ["users:read"], "expires_at": "soon"}),
            "expires_at",
        ),
        (
            json!({"scopes": ["users:read"], "metadata": [1]}),
            "metadata",
        ),
        (
            json!({"scopes": ["users:read"], "environment": "test"}),
            "environment",
        ),
        (json!({"scopes": ["users:read"], "colour": "red"}), "colour"),
    ];
    for (body, field) in cases {
        assert_invalid(&patch(&server, &t.key, &key, body).await, field);
    }
    for raw in ["{", "[]", ""] {
        let reply = server
            .call("PATCH", &path(&key), Some(&t.key), Some(raw))
            .await;
        assert_invalid(&reply, "body");
    }
    assert_eq!(get(&server, &t.key, &key).await, before);
    assert_eq!(server.feed("since=0").await.version(), version);

    // Another tenant's key is absent; a key without tenant:admin is refused.
    let other = server.create_tenant("other").await;
    assert_not_found(&patch(&server, &other.key, &key, json!({"name": "x"})).await);
    let reader = server
        .create_key(&t.key, json!({"name": "r", "scopes": ["tenant:read"]}))
        .await;
    let refused = patch(
        &server,
        reader["api_key"].as_str().unwrap(),
        &key,
        json!({"name": "x"}),
    )
    .await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert_eq!(get(&server, &t.key, &key).await, before);
}

#[tokio::test]
async fn a_revoked_key_cannot_be_patched() {
    let server = Server::start().await;
    let (t, key) = tenant_and_key(&server).await;
    let revoked = server.call("DELETE", &path(&key), Some(&t.key), None).await;
    assert_eq!(revoked.status, 200);
    let reply = patch(&server, &t.key, &key, json!({"scopes": ["memory:read"]})).await;
    assert_eq!(reply.status, 409, "{}", reply.text());
    assert_eq!(reply.json()["error"]["type"], "conflict");
    assert_eq!(
        get(&server, &t.key, &key).await["revoked_at"],
        revoked.json()["revoked_at"]
    );
}

#[tokio::test]
async fn the_list_pages_in_creation_order_with_filters() {
    let server = Server::start().await;
    let t = server.create_tenant("acme").await;
    let mut made = vec![t.key_id.clone()];
    for i in 0..7 {
        let env = if i % 2 == 0 { "live" } else { "test" };
        let key = server
            .create_key(
                &t.key,
                json!({"name": format!("k{i}"), "scopes": ["memory:read"], "environment": env}),
            )
            .await;
        made.push(key["id"].as_str().unwrap().to_string());
    }
    for limit in [1, 3, 8, 100] {
        assert_eq!(
            all_pages(&server, &t.key, limit, "").await,
            made,
            "limit {limit}"
        );
    }
    let first = page(&server, &t.key, "").await;
    assert_eq!(first["data"].as_array().unwrap().len(), 8);
    assert_eq!(first["next_cursor"], Value::Null);

    let test_keys: Vec<String> = made.iter().skip(2).step_by(2).cloned().collect();
    assert_eq!(
        all_pages(&server, &t.key, 2, "&environment=test").await,
        test_keys
    );

    // One revoked, one expired (a 2-second expiry, waited out).
    let revoke = format!("/api/v1/api-keys/{}", made[1]);
    assert_eq!(
        server
            .call("DELETE", &revoke, Some(&t.key), None)
            .await
            .status,
        200
    );
    let soon = server
        .create_key(
            &t.key,
            json!({"name": "soon", "scopes": ["memory:read"], "expires_at": rfc3339(now() + 2)}),
        )
        .await;
    let soon_id = soon["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        all_pages(&server, &t.key, 2, "&status=revoked").await,
        vec![made[1].clone()]
    );
    assert_eq!(
        all_pages(&server, &t.key, 2, "&status=expired").await,
        vec![soon_id]
    );
    let active: Vec<String> = made.iter().filter(|id| **id != made[1]).cloned().collect();
    assert_eq!(
        all_pages(&server, &t.key, 3, "&status=active").await,
        active
    );
    assert_eq!(
        all_pages(&server, &t.key, 3, "&status=active&environment=live").await,
        vec![
            made[0].clone(),
            made[3].clone(),
            made[5].clone(),
            made[7].clone()
        ]
    );

    // Another tenant sees none of them, and its cursor position is its own.
    let other = server.create_tenant("other").await;
    assert_eq!(
        all_pages(&server, &other.key, 1, "").await,
        vec![other.key_id]
    );
}

#[tokio::test]
async fn bad_list_parameters_are_a_400_naming_them() {
    let server = Server::start().await;
    let t = server.create_tenant("acme").await;
    let cases = [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=-1", "limit"),
        ("limit=ten", "limit"),
        ("cursor=garbage!", "cursor"),
        ("cursor=a2MxAAAA", "cursor"),
        ("cursor=", "cursor"),
        ("environment=prod", "environment"),
        ("status=deleted", "status"),
        ("sort=name", "sort"),
        ("limit=2&limit=3", "limit"),
    ];
    for (query, field) in cases {
        let reply = server
            .call(
                "GET",
                &format!("/api/v1/api-keys?{query}"),
                Some(&t.key),
                None,
            )
            .await;
        assert_invalid(&reply, field);
    }
    // The key in the query string is a credential, not a filter.
    let reply = server
        .call(
            "GET",
            &format!("/api/v1/api-keys?limit=1&api_key={}", t.key),
            None,
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// Pages read while another task inserts keys: no key twice, every key
/// that existed before the first page in its place, and every key whose
/// 201 came before the last page was asked for on some page.
#[tokio::test]
async fn pages_read_during_inserts_have_no_duplicates_or_gaps() {
    let server = Arc::new(Server::start().await);
    let t = server.create_tenant("acme").await;
    let mut existing = vec![t.key_id.clone()];
    for i in 0..10 {
        let key = server
            .create_key(
                &t.key,
                json!({"name": format!("old{i}"), "scopes": ["memory:read"]}),
            )
            .await;
        existing.push(key["id"].as_str().unwrap().to_string());
    }
    let (writer_server, admin) = (Arc::clone(&server), t.key.clone());
    let done = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let acknowledged = Arc::clone(&done);
    let writer = tokio::spawn(async move {
        for i in 0..40 {
            let key = writer_server
                .create_key(
                    &admin,
                    json!({"name": format!("new{i}"), "scopes": ["memory:read"]}),
                )
                .await;
            acknowledged
                .lock()
                .unwrap()
                .push(key["id"].as_str().unwrap().to_string());
        }
    });

    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut acked_before_last: Vec<String>;
    let mut pages = 0;
    loop {
        acked_before_last = done.lock().unwrap().clone();
        let query = match &cursor {
            None => "limit=3".to_string(),
            Some(c) => format!("limit=3&cursor={c}"),
        };
        let v = page(&server, &t.key, &query).await;
        pages += 1;
        seen.extend(
            v["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["id"].as_str().unwrap().to_string()),
        );
        match v["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    writer.await.unwrap();
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a key on two pages: {seen:?}");
    assert_eq!(
        seen[..existing.len()],
        existing[..],
        "the old keys first, in order"
    );
    for id in &acked_before_last {
        assert!(
            seen.contains(id),
            "{id} was created before the last page but is missing"
        );
    }
    // The pages are a prefix of the full list, in its order.
    let full = all_pages(&server, &t.key, 100, "").await;
    assert_eq!(full.len(), existing.len() + 40);
    assert_eq!(full[..seen.len()], seen[..]);
    println!(
        "paged {} keys in {pages} pages while 40 were inserted ({} acknowledged before the last page)",
        seen.len(),
        acked_before_last.len()
    );
}

/// A database made before metadata (migration 0004 not applied) migrates on
/// the next start: its keys keep working, with no metadata, and take some.
#[tokio::test]
async fn a_database_without_metadata_migrates_on_start() {
    let mut server = Server::start().await;
    let (t, key) = tenant_and_key(&server).await;
    server.kill9();
    // Back to before migration 4 (and 5, usage, 6, caps, 7, events, and 8,
    // the dashboard's, which came after it).
    let usage = "DROP INDEX api_keys_exhausted; ALTER TABLE api_keys DROP COLUMN caps; \
                 ALTER TABLE api_keys DROP COLUMN exhausted; \
                 DROP TABLE usage_minute; DROP TABLE usage_hour; DROP TABLE usage_batches; \
                 ALTER TABLE api_keys DROP COLUMN last_used_at; \
                 DROP TABLE webhook_deliveries; DROP TABLE webhooks; DROP TABLE audit_log; \
                 ALTER TABLE api_keys DROP COLUMN expiry_notice_for; \
                 DROP TABLE dashboard_sessions; DROP TABLE dashboard_accounts;";
    let undo = if server.on_postgres() {
        format!(
            "{usage} ALTER TABLE api_keys DROP COLUMN metadata; \
             DELETE FROM keygate_migrations WHERE number >= 4;"
        )
    } else {
        format!("{usage} ALTER TABLE api_keys DROP COLUMN metadata; PRAGMA user_version = 3;")
    };
    server.sql(&undo).await;
    server.restart().await;
    let got = get(&server, &t.key, &key).await;
    assert_eq!(got["metadata"], Value::Null);
    assert_eq!(got["last_used_at"], Value::Null);
    assert_eq!(got["name"], "k");
    let patched = patch(&server, &t.key, &key, json!({"metadata": {"again": true}})).await;
    assert_eq!(patched.status, 200, "{}", patched.text());
    assert_eq!(
        get(&server, &t.key, &key).await["metadata"],
        json!({"again": true})
    );
    assert!(
        server.log().contains("database migrated"),
        "{}",
        server.log()
    );
}
