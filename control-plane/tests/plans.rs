//! Plans and the operator API (SPEC §10): a tenant never mints outside its
//! plan, the operator moves it (API or CLI) with a token that no tenant key
//! replaces, bad plans files stop the start naming what is wrong, and the
//! management API answers 429 over the plan's rate; a key created without
//! `scopes` holds its plan's default key scopes.

// Test code: a failed unwrap or assertion is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::plans::OPERATOR_TOKEN;
use common::{Server, BIN};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::process::Command;

const PRO_KEY: &str = r#"{"name":"p","scopes":["memory:read"],"rate_limit_tier":"pro"}"#;

fn forbidden(reply: &common::Reply) -> String {
    assert_eq!(reply.status, 403, "{}", reply.text());
    let v = reply.json();
    assert_eq!(v["error"]["type"], "forbidden", "{v}");
    v["error"]["message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_tenant_never_raises_its_own_plan() {
    let server = Server::start().await;
    let t = server.create_tenant("acme").await;
    let path = format!("/operator/v1/tenants/{}", t.id);
    assert_eq!(
        server.operator("GET", &path, None).await.json()["plan"],
        "free"
    );

    let refused = server
        .call("POST", "/api/v1/api-keys", Some(&t.key), Some(PRO_KEY))
        .await;
    let message = forbidden(&refused);
    assert!(
        message.contains("pro") && message.contains("plan free"),
        "{message}"
    );
    let free = json!({"name": "f", "scopes": ["memory:read"], "rate_limit_tier": "free"});
    server.create_key(&t.key, free).await;
    let listed = server
        .call("GET", "/api/v1/api-keys", Some(&t.key), None)
        .await;
    assert_eq!(
        listed.json()["data"].as_array().unwrap().len(),
        2,
        "nothing half-made"
    );

    server.set_plan(&t.id, "pro").await;
    let pro = server
        .call("POST", "/api/v1/api-keys", Some(&t.key), Some(PRO_KEY))
        .await;
    assert_eq!(pro.status, 201, "{}", pro.text());

    // Back on free, the pro key cannot be rotated into a new pro key.
    server.set_plan(&t.id, "free").await;
    let rotate = format!(
        "/api/v1/api-keys/{}/rotate",
        pro.json()["id"].as_str().unwrap()
    );
    let message = forbidden(&server.call("POST", &rotate, Some(&t.key), None).await);
    assert!(message.contains("pro"), "{message}");
}

#[tokio::test]
async fn the_operator_api_takes_only_the_operator_token() {
    let server = Server::start().await;
    let t = server.create_tenant("acme").await;
    let wrong = "not-the-operator-token-0123456789";
    for token in [None, Some(t.key.as_str()), Some(wrong)] {
        let reply = server
            .call("GET", "/operator/v1/tenants", token, None)
            .await;
        assert_eq!(reply.status, 401, "{}", reply.text());
        assert_eq!(reply.json()["error"]["type"], "unauthorized");
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Bearer realm=\"keygate\"")
        );
    }
    let patch = format!("/operator/v1/tenants/{}", t.id);
    let body = Some(r#"{"plan":"pro"}"#);
    assert_eq!(
        server
            .call("PATCH", &patch, Some(&t.key), body)
            .await
            .status,
        401
    );
    assert!(
        !server.log().contains(OPERATOR_TOKEN),
        "the token is never logged"
    );

    let off = Server::start_without_operator().await;
    let reply = off.operator("GET", "/operator/v1/tenants", None).await;
    assert_eq!(reply.status, 404, "{}", reply.text());
    assert_eq!(reply.json()["error"]["type"], "not_found");
}

#[tokio::test]
async fn the_operator_lists_reads_and_sets_plans() {
    let server = Server::start().await;
    let mut made = HashSet::new();
    for name in ["a", "b", "c", "d", "e"] {
        made.insert(server.create_tenant(name).await.id);
    }
    let mut seen = Vec::new();
    let mut query = "limit=2".to_string();
    loop {
        let reply = server
            .operator("GET", &format!("/operator/v1/tenants?{query}"), None)
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let v = reply.json();
        let page = v["data"].as_array().unwrap();
        assert!(page.len() <= 2);
        seen.extend(page.iter().map(|t| t["id"].as_str().unwrap().to_string()));
        match v["next_cursor"].as_str() {
            Some(cursor) => query = format!("limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert_eq!(
        seen.iter().cloned().collect::<HashSet<_>>(),
        made,
        "every tenant once"
    );

    let id = seen[0].clone();
    let path = format!("/operator/v1/tenants/{id}");
    let one = server.operator("GET", &path, None).await.json();
    assert_eq!(
        (one["id"].as_str(), one["plan"].as_str()),
        (Some(id.as_str()), Some("free"))
    );
    assert!(one["name"].is_string() && one["email"].is_string() && one["created_at"].is_string());

    let bad = server
        .operator("PATCH", &path, Some(r#"{"plan":"gold"}"#))
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert_eq!(bad.json()["error"]["field"], "plan");
    let other = server
        .operator("PATCH", &path, Some(r#"{"plan":"pro","x":1}"#))
        .await;
    assert_eq!(other.json()["error"]["field"], "x");
    assert_eq!(
        server.operator("GET", &path, None).await.json()["plan"],
        "free",
        "unchanged"
    );

    let unknown = "/operator/v1/tenants/org_0000000000000001";
    assert_eq!(server.operator("GET", unknown, None).await.status, 404);
    let body = Some(r#"{"plan":"pro"}"#);
    assert_eq!(server.operator("PATCH", unknown, body).await.status, 404);
    let cursor = server
        .operator("GET", "/operator/v1/tenants?cursor=nope", None)
        .await;
    assert_eq!(cursor.json()["error"]["field"], "cursor");
}

#[tokio::test]
async fn set_plan_on_the_command_line_and_migrated_or_unknown_plans() {
    let mut server = Server::start().await;
    let t = server.create_tenant("acme").await;
    let out = server.admin(&["tenant", "set-plan", &t.id, "pro"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["plan"], "pro");
    let create = server
        .call("POST", "/api/v1/api-keys", Some(&t.key), Some(PRO_KEY))
        .await;
    assert_eq!(create.status, 201, "the CLI's plan holds for the API");
    let bad = server.admin(&["tenant", "set-plan", &t.id, "gold"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("plan"));

    // A tenant migrated from before plans ('') and one on a plan the file
    // no longer has are on the default plan, and the start says so.
    let u = server.create_tenant("umbrella").await;
    server.kill9();
    let sql = format!(
        "UPDATE tenants SET plan = '' WHERE id = {};\
         UPDATE tenants SET plan = 'gold' WHERE id = {};",
        signed(&t.id),
        signed(&u.id)
    );
    server.sql(&sql).await;
    server.restart().await;
    assert!(
        server.log().contains("plan the plans file lacks"),
        "{}",
        server.log()
    );
    for id in [&t.id, &u.id] {
        let reply = server
            .operator("GET", &format!("/operator/v1/tenants/{id}"), None)
            .await;
        assert_eq!(reply.json()["plan"], "free");
    }
    let refused = server
        .call("POST", "/api/v1/api-keys", Some(&u.key), Some(PRO_KEY))
        .await;
    forbidden(&refused);
}

/// An `org_<hex>` id as the signed integer the databases store.
fn signed(id: &str) -> i64 {
    let bits = u64::from_str_radix(id.trim_start_matches("org_"), 16).unwrap();
    i64::from_ne_bytes(bits.to_ne_bytes())
}

#[test]
fn bad_plans_files_stop_the_start_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[[plan]]\nname = \"free\"\ntiers = [\"free\"]\nprice = 3\n",
            "line 4",
        ),
        (
            "[[plan]]\nname = \"free\"\ntiers = [\"free\", \"gold\"]\n",
            "tiers",
        ),
        (
            "[[plan]]\nname = \"free\"\ntiers = [\"free\"]\nrate_limits = { per_minute = \"x\" }\n",
            "line 4",
        ),
        (
            "[[plan]]\nname = \"free\"\ntiers = [\"free\"]\ndefault_key_scopes = [\"memory:delete\"]\n",
            "default_key_scopes",
        ),
    ];
    for (i, (text, named)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("plans{i}.toml"));
        std::fs::write(&file, text).unwrap();
        let out = Command::new(BIN)
            .args(["--plans", file.to_str().unwrap(), "--database"])
            .arg(dir.path().join("k.db"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--feed-token",
                "x".repeat(20).as_str(),
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(
            stderr.contains("--plans") && stderr.contains(named),
            "{named}: {stderr}"
        );
    }
    let out = Command::new(BIN)
        .args(["--default-plan", "gold", "--database"])
        .arg(dir.path().join("k.db"))
        .args(["tenant", "create", "--name", "a", "--email", "a@b.c"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--default-plan"));
}

#[tokio::test]
async fn the_management_api_is_limited_per_tenant_by_its_plan() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plans.toml");
    let text = "[[plan]]\nname = \"tight\"\ntiers = [\"free\", \"pro\"]\n\
                management = { rate = 1, burst = 5 }\n";
    std::fs::write(&file, text).unwrap();
    let server = Server::start_with(&["--plans", file.to_str().unwrap()]).await;
    let (a, b) = (
        server.create_tenant("a").await,
        server.create_tenant("b").await,
    );
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let reply = server
            .call("GET", "/api/v1/auth/me", Some(&a.key), None)
            .await;
        statuses.push(reply.status);
        if reply.status == 429 {
            assert_eq!(
                reply.json(),
                json!({"error": {"type": "rate_limited", "message": "Rate limit exceeded"}})
            );
            assert_eq!(reply.header("retry-after"), Some("1"));
        }
    }
    println!("burst 5 at 1/s, 6 calls: {statuses:?}");
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);
    let mint = server
        .call("POST", "/api/v1/api-keys", Some(&a.key), Some(PRO_KEY))
        .await;
    assert_eq!(mint.status, 429, "minting counts too");
    let other = server
        .call("GET", "/api/v1/auth/me", Some(&b.key), None)
        .await;
    assert_eq!(other.status, 200, "another tenant has its own bucket");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let refilled = server
        .call("GET", "/api/v1/auth/me", Some(&a.key), None)
        .await;
    assert_eq!(refilled.status, 200, "a token back after a second");
}

#[tokio::test]
async fn a_key_created_without_scopes_holds_its_plans_default_key_scopes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plans.toml");
    let text = "[[plan]]\nname = \"free\"\ntiers = [\"free\"]\n\
                [[plan]]\nname = \"pro\"\ntiers = [\"free\", \"pro\"]\n\
                default_key_scopes = [\"users:read\", \"tenant:admin\"]\n";
    std::fs::write(&file, text).unwrap();
    let server = Server::start_with(&["--plans", file.to_str().unwrap()]).await;
    let t = server.create_tenant("defaults").await;
    let scopes_of = |v: &Value| v["scopes"].clone();
    let every_but_admin = json!([
        "memory:read",
        "memory:write",
        "users:read",
        "users:write",
        "conversations:read",
        "conversations:write",
        "tenant:read"
    ]);
    let named = server.create_key(&t.key, json!({"name": "x"})).await;
    assert_eq!(scopes_of(&named), every_but_admin, "{named}");
    let null = server
        .create_key(&t.key, json!({"name": "y", "scopes": null}))
        .await;
    assert_eq!(scopes_of(&null), every_but_admin, "{null}");
    let asked = json!({"name": "z", "scopes": ["memory:read"]});
    assert_eq!(
        scopes_of(&server.create_key(&t.key, asked).await),
        json!(["memory:read"])
    );
    let empty = r#"{"name":"e","scopes":[]}"#;
    let refused = server
        .call("POST", "/api/v1/api-keys", Some(&t.key), Some(empty))
        .await;
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert_eq!(refused.json()["error"]["field"], "scopes");

    server.set_plan(&t.id, "pro").await;
    let on_pro = server.create_key(&t.key, json!({"name": "p"})).await;
    assert_eq!(
        scopes_of(&on_pro),
        json!(["users:read", "tenant:admin"]),
        "{on_pro}"
    );
    let stored = server.list_all(&t.key).await;
    assert_eq!(stored.len(), 5, "the first key and four more");
}
