//! A key's own limits and owner within its tenant's plan, through the key
//! API: the plan's ceilings on create and `PATCH` (403 naming the field,
//! nothing written), `PATCH` of `rate_limits` and `external_id` reaching the
//! feed, the list filtered by `external_id`, and the operator suspending and
//! resuming a tenant. On either backend (`KEYGATE_TEST_BACKEND=postgres`).

// Test code: a failed unwrap or assertion is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{Reply, Server};
use serde_json::{json, Value};

/// The example plans of the repository: `free` caps a key's own limits at
/// 60/minute and 10000/day, `pro` at 600/minute and 500000/day.
fn example_plans() -> [&'static str; 2] {
    [
        "--plans",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../plans.example.toml"),
    ]
}

fn assert_forbidden_naming(reply: &Reply, field: &str) {
    assert_eq!(reply.status, 403, "{}", reply.text());
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains(field), "{message}");
}

async fn patch(server: &Server, admin: &str, id: &str, body: Value) -> Reply {
    let path = format!("/api/v1/api-keys/{id}");
    server
        .call("PATCH", &path, Some(admin), Some(&body.to_string()))
        .await
}

async fn mint(server: &Server, admin: &str, body: Value) -> Reply {
    server
        .call(
            "POST",
            "/api/v1/api-keys",
            Some(admin),
            Some(&body.to_string()),
        )
        .await
}

#[tokio::test]
async fn own_limits_stay_within_the_plan_on_create_and_patch() {
    let server = Server::start_with(&example_plans()).await;
    let t = server.create_tenant("acme").await;
    let base = json!({"name": "k", "scopes": ["memory:read"]});
    let with = |limits: Value| {
        let mut body = base.clone();
        body["rate_limits"] = limits;
        body
    };

    let over = mint(&server, &t.key, with(json!({"per_minute": 61}))).await;
    assert_forbidden_naming(&over, "rate_limits.per_minute");
    let over = mint(&server, &t.key, with(json!({"per_day": 10_001}))).await;
    assert_forbidden_naming(&over, "rate_limits.per_day");
    let key = mint(&server, &t.key, with(json!({"per_minute": 60}))).await;
    assert_eq!(key.status, 201, "{}", key.text());
    let id = key.json()["id"].as_str().unwrap().to_string();

    // A PATCH over the ceiling changes nothing, name included.
    let before = server.feed("").await.version();
    let refused = patch(
        &server,
        &t.key,
        &id,
        json!({"name": "renamed", "rate_limits": {"per_day": 20_000}}),
    )
    .await;
    assert_forbidden_naming(&refused, "rate_limits.per_day");
    let got = server
        .call("GET", &format!("/api/v1/api-keys/{id}"), Some(&t.key), None)
        .await
        .json();
    assert_eq!(
        (got["name"].clone(), got["rate_limits"].clone()),
        (json!("k"), json!({"per_minute": 60, "per_day": null}))
    );
    assert_eq!(server.feed("").await.version(), before);

    // Within the plan: applied, and the feed moves (the filter enforces it).
    let patched = patch(
        &server,
        &t.key,
        &id,
        json!({"rate_limits": {"per_day": 500}}),
    )
    .await;
    assert_eq!(patched.status, 200, "{}", patched.text());
    assert_eq!(
        patched.json()["rate_limits"],
        json!({"per_minute": null, "per_day": 500})
    );
    assert!(server.feed("").await.version() > before);
    let cleared = patch(&server, &t.key, &id, json!({"rate_limits": null})).await;
    assert_eq!(cleared.json()["rate_limits"], Value::Null);

    // The operator's `pro` plan raises the ceiling.
    server.set_plan(&t.id, "pro").await;
    let raised = patch(
        &server,
        &t.key,
        &id,
        json!({"rate_limits": {"per_minute": 600}}),
    )
    .await;
    assert_eq!(raised.status, 200, "{}", raised.text());
}

#[tokio::test]
async fn the_owner_is_patched_and_filters_the_list() {
    let server = Server::start().await;
    let t = server.create_tenant("acme").await;
    let body =
        |owner: &str| json!({"name": owner, "scopes": ["memory:read"], "external_id": owner});
    let alice = server.create_key(&t.key, body("user-alice")).await;
    server.create_key(&t.key, body("user-bob")).await;
    let id = alice["id"].as_str().unwrap();

    let list = |owner: &'static str| {
        let server = &server;
        let key = t.key.clone();
        async move {
            let path = format!("/api/v1/api-keys?external_id={owner}");
            let reply = server.call("GET", &path, Some(&key), None).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            let names: Vec<String> = reply.json()["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["name"].as_str().unwrap().to_string())
                .collect();
            names
        }
    };
    assert_eq!(list("user-alice").await, ["user-alice"]);
    assert_eq!(list("user-carol").await, Vec::<String>::new());

    let moved = patch(&server, &t.key, id, json!({"external_id": "user-carol"})).await;
    assert_eq!(moved.status, 200, "{}", moved.text());
    assert!(moved.json()["propagated"].is_object(), "{}", moved.text());
    assert_eq!(list("user-carol").await, ["user-alice"]);
    assert_eq!(list("user-alice").await, Vec::<String>::new());

    let bad = patch(&server, &t.key, id, json!({"external_id": "has space"})).await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert_eq!(bad.json()["error"]["field"], "external_id");
    let bad = server
        .call("GET", "/api/v1/api-keys?external_id=", Some(&t.key), None)
        .await;
    assert_eq!(bad.json()["error"]["field"], "external_id");
}

#[tokio::test]
async fn the_operator_suspends_and_resumes_a_tenant() {
    let server = Server::start().await;
    let t = server.create_tenant("acme").await;
    let other = server.create_tenant("globex").await;
    let path = format!("/operator/v1/tenants/{}", t.id);
    let me = |key: String| {
        let server = &server;
        async move {
            server
                .call("GET", "/api/v1/auth/me", Some(&key), None)
                .await
                .status
        }
    };

    // A bad plan next to `suspended` applies neither.
    let bad = server
        .operator("PATCH", &path, Some(r#"{"plan":"nope","suspended":true}"#))
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert_eq!(
        server.operator("GET", &path, None).await.json()["suspended"],
        false
    );
    assert_eq!(me(t.key.clone()).await, 200);

    let suspended = server
        .operator("PATCH", &path, Some(r#"{"suspended":true}"#))
        .await;
    assert_eq!(suspended.status, 200, "{}", suspended.text());
    assert_eq!(suspended.json()["suspended"], true);
    assert!(
        suspended.json()["propagated"].is_object(),
        "{}",
        suspended.text()
    );
    assert_eq!(
        server.operator("GET", &path, None).await.json()["suspended"],
        true
    );
    assert_eq!(me(t.key.clone()).await, 403);
    assert_eq!(me(other.key.clone()).await, 200);

    let resumed = server
        .operator("PATCH", &path, Some(r#"{"suspended":false}"#))
        .await;
    assert_eq!(resumed.json()["suspended"], false, "{}", resumed.text());
    assert_eq!(me(t.key.clone()).await, 200);

    let bad = server
        .operator("PATCH", &path, Some(r#"{"suspended":"yes"}"#))
        .await;
    assert_eq!(bad.json()["error"]["field"], "suspended");
}
