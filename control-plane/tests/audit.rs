//! The audit log (SPEC §11) against the real binary: every management
//! action of the test (key create, patch, rotate, revoke, webhook create and
//! delete, plan change and suspension by the operator API and the CLI) is
//! found with its actor, source address, target and changed fields, never a
//! secret; filters and paging; one tenant never sees another's entries.

// Test code: a failed unwrap or assertion is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::plans::OPERATOR_TOKEN;
use common::{Server, Tenant};
use serde_json::{json, Value};

/// Every entry `query` finds, page by page with `limit=2`.
async fn all_entries(server: &Server, key: &str, query: &str) -> Vec<Value> {
    let mut entries = Vec::new();
    let mut path = format!("/api/v1/audit-log?limit=2{query}");
    loop {
        let reply = server.call("GET", &path, Some(key), None).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        let page = reply.json();
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 2);
        entries.extend(data.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/audit-log?limit=2{query}&cursor={cursor}"),
            None => return entries,
        }
    }
}

fn find<'a>(entries: &'a [Value], action: &str) -> Vec<&'a Value> {
    entries.iter().filter(|e| e["action"] == action).collect()
}

async fn call(server: &Server, t: &Tenant, method: &str, path: &str, body: Value) -> Value {
    let reply = server
        .call_with(
            method,
            path,
            Some(&t.key),
            Some(&body.to_string()),
            &[("x-forwarded-for", "203.0.113.50, 198.51.100.7")],
        )
        .await;
    assert!(reply.status < 300, "{method} {path}: {}", reply.text());
    reply.json()
}

#[tokio::test]
async fn every_management_action_is_recorded_with_actor_and_source() {
    let server = Server::start().await;
    let t = server.create_tenant("audited").await;
    let other = server.create_tenant("other").await;
    let body = json!({"name": "k", "scopes": ["memory:read"], "external_id": "alice", "metadata": {"team": "a"}});
    let created = call(&server, &t, "POST", "/api/v1/api-keys", body).await;
    let id = created["id"].as_str().unwrap().to_string();
    let secret_key = created["api_key"].as_str().unwrap().to_string();
    let path = format!("/api/v1/api-keys/{id}");
    call(
        &server,
        &t,
        "PATCH",
        &path,
        json!({"name": "renamed", "scopes": ["memory:read", "memory:write"]}),
    )
    .await;
    let rotated = call(
        &server,
        &t,
        "POST",
        &format!("{path}/rotate"),
        json!({"grace_seconds": 60}),
    )
    .await;
    let new_id = rotated["id"].as_str().unwrap().to_string();
    call(
        &server,
        &t,
        "DELETE",
        &format!("/api/v1/api-keys/{new_id}"),
        json!({}),
    )
    .await;
    let hook = call(
        &server,
        &t,
        "POST",
        "/api/v1/webhooks",
        json!({"url": "http://127.0.0.1:9/h", "events": ["key.revoked"]}),
    )
    .await;
    let (hook_id, hook_secret) = (
        hook["id"].as_str().unwrap(),
        hook["secret"].as_str().unwrap(),
    );
    call(
        &server,
        &t,
        "DELETE",
        &format!("/api/v1/webhooks/{hook_id}"),
        json!({}),
    )
    .await;
    // The operator: its API (through no proxy: the peer is the source) and the CLI.
    let op = format!("/operator/v1/tenants/{}", t.id);
    let reply = server
        .operator("PATCH", &op, Some(r#"{"plan":"free","suspended":true}"#))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let out = server.admin(&["tenant", "resume", &t.id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = server.admin(&["tenant", "set-plan", &t.id, "pro"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let entries = all_entries(&server, &t.key, "").await;
    for e in &entries {
        println!(
            "{} {} {} {} {}",
            e["time"], e["actor"], e["source"], e["action"], e["changes"]
        );
    }
    // Newest first, each once.
    let seqs: Vec<u64> = entries
        .iter()
        .map(|e| e["id"].as_str().unwrap()[4..].parse().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "{seqs:?}");
    let by_key = |action: &str| {
        let found = find(&entries, action);
        assert_eq!(found.len(), 1, "{action}: {entries:?}");
        let e = found[0].clone();
        assert_eq!(e["actor"], t.key_id.as_str(), "{e}");
        assert_eq!(e["source"], "198.51.100.7", "the proxy's entry: {e}");
        e
    };
    let create = by_key("api_key.create");
    assert_eq!(create["target"]["key_id"], id.as_str());
    assert_eq!(create["target"]["external_id"], "alice");
    assert_eq!(create["changes"]["name"], "k");
    assert_eq!(create["changes"]["metadata"], json!({"team": "a"}));
    let patch = by_key("api_key.update");
    assert_eq!(
        patch["changes"],
        json!({"name": "renamed", "scopes": ["memory:read", "memory:write"]})
    );
    let rotate = by_key("api_key.rotate");
    assert_eq!(rotate["target"]["key_id"], id.as_str());
    assert_eq!(rotate["changes"]["new_key_id"], new_id.as_str());
    assert_eq!(rotate["changes"]["grace_seconds"], 60);
    let revoke = by_key("api_key.revoke");
    assert_eq!(revoke["target"]["key_id"], new_id.as_str());
    let hook_made = by_key("webhook.create");
    assert_eq!(hook_made["target"]["webhook_id"], hook_id);
    assert_eq!(hook_made["changes"]["events"], json!(["key.revoked"]));
    assert_eq!(by_key("webhook.delete")["target"]["webhook_id"], hook_id);
    let by_operator = |action: &str, source: &str, changes: Value| {
        let found = find(&entries, action);
        let e = found
            .iter()
            .find(|e| e["source"] == source)
            .unwrap_or_else(|| panic!("{action} from {source}: {entries:?}"));
        assert_eq!(e["actor"], "operator", "{e}");
        assert_eq!(e["changes"], changes, "{e}");
    };
    by_operator("tenant.plan_change", "127.0.0.1", json!({"plan": "free"}));
    by_operator("tenant.suspend", "127.0.0.1", json!({"suspended": true}));
    by_operator("tenant.resume", "cli", json!({"suspended": false}));
    by_operator("tenant.plan_change", "cli", json!({"plan": "pro"}));
    assert_eq!(entries.len(), 10, "{entries:?}");

    // Never a secret: not the keys, not the webhook secret, not the operator token.
    let text = server
        .call("GET", "/api/v1/audit-log?limit=100", Some(&t.key), None)
        .await
        .text();
    for secret in [
        secret_key.as_str(),
        rotated["api_key"].as_str().unwrap(),
        hook_secret,
        OPERATOR_TOKEN,
        &t.key,
    ] {
        assert!(!text.contains(secret), "a secret in the audit log");
    }
    // Another tenant sees none of it.
    assert!(all_entries(&server, &other.key, "").await.is_empty());
    let foreign = format!("&key_id={id}");
    assert!(all_entries(&server, &other.key, &foreign).await.is_empty());
}

#[tokio::test]
async fn the_audit_log_filters_and_pages() {
    let server = Server::start().await;
    let t = server.create_tenant("filters").await;
    let mut alice = Vec::new();
    for n in 0..5 {
        let owner = if n % 2 == 0 { "alice" } else { "bob" };
        let body =
            json!({"name": format!("k{n}"), "scopes": ["memory:read"], "external_id": owner});
        let created = server.create_key(&t.key, body).await;
        let id = created["id"].as_str().unwrap().to_string();
        if owner == "alice" {
            alice.push(id.clone());
        }
        server
            .call(
                "DELETE",
                &format!("/api/v1/api-keys/{id}"),
                Some(&t.key),
                None,
            )
            .await;
    }
    let all = all_entries(&server, &t.key, "").await;
    assert_eq!(all.len(), 10);
    let ids: std::collections::HashSet<&str> =
        all.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 10, "a page repeated an entry");
    let revokes = all_entries(&server, &t.key, "&action=api_key.revoke").await;
    assert_eq!(revokes.len(), 5);
    assert!(revokes.iter().all(|e| e["action"] == "api_key.revoke"));
    let of_alice = all_entries(&server, &t.key, "&external_id=alice").await;
    assert_eq!(of_alice.len(), 6);
    assert!(of_alice
        .iter()
        .all(|e| e["target"]["external_id"] == "alice"));
    let one = all_entries(
        &server,
        &t.key,
        &format!("&key_id={}&action=api_key.create", alice[0]),
    )
    .await;
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["target"]["key_id"], alice[0].as_str());
    for (query, field) in [
        ("action=key.eat", "action"),
        ("key_id=nope", "key_id"),
        ("limit=101", "limit"),
        ("cursor=zz", "cursor"),
        ("colour=red", "colour"),
    ] {
        let reply = server
            .call(
                "GET",
                &format!("/api/v1/audit-log?{query}"),
                Some(&t.key),
                None,
            )
            .await;
        assert_eq!(reply.status, 400, "{query}: {}", reply.text());
        assert_eq!(reply.json()["error"]["field"], field);
    }
    // A key without tenant:read or tenant:admin reads nothing.
    let mem = server
        .create_key(&t.key, json!({"name": "m", "scopes": ["memory:read"]}))
        .await;
    let reply = server
        .call("GET", "/api/v1/audit-log", mem["api_key"].as_str(), None)
        .await;
    assert_eq!(reply.status, 403, "{}", reply.text());
}
