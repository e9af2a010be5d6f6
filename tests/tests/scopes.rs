//! Route rules, scopes, public routes and CORS preflight (SPEC §5, §9).

use keygate_e2e::{Stack, StackOptions};
use reqwest::Method;
use serde_json::json;

fn lacks(scope: &str) -> String {
    format!("API key lacks required scope: {scope}")
}

#[tokio::test]
async fn scopes_follow_the_demo_rules() {
    let stack = Stack::start().await;
    let admin = stack.tenant().api_key.clone();
    let reader = stack
        .create_key(&admin, json!({"name": "reader", "scopes": ["memory:read"]}))
        .await;
    let key = reader.str("api_key");
    let call =
        |method: Method, path: &str| stack.send(stack.request(method, path).bearer_auth(key));

    for (method, path) in [
        (Method::GET, "/api/v1/memory"),
        (Method::HEAD, "/api/v1/memory"),
        (Method::GET, "/api/v1/memory/abc"),
        // Prefixes match whole segments: /api/v1/memoryx is no memory route.
        (Method::GET, "/api/v1/memoryx"),
        // No rule: any valid key.
        (Method::DELETE, "/other/thing"),
    ] {
        call(method.clone(), path).await.expect(200);
    }
    let refusals = [
        (Method::POST, "/api/v1/memory", "memory:write"),
        (Method::DELETE, "/api/v1/memory/abc", "memory:write"),
        (Method::GET, "/api/v1/users", "users:read"),
        (Method::PUT, "/api/v1/users/7", "users:write"),
        (Method::GET, "/api/v1/conversations", "conversations:read"),
        (
            Method::POST,
            "/api/v1/conversations/1/messages",
            "conversations:write",
        ),
    ];
    for (method, path, scope) in refusals {
        let reply = call(method.clone(), path).await;
        assert_eq!(reply.status, 403, "{method} {path}: {reply:#?}");
        reply.expect_error(403, "forbidden", &lacks(scope));
    }
}

/// Envoy normalizes the path before the filter matches rules, so dot
/// segments, doubled and escaped slashes do not dodge a rule.
#[tokio::test]
async fn path_tricks_do_not_dodge_rules() {
    let stack = Stack::start().await;
    let admin = stack.tenant().api_key.clone();
    let reader = stack
        .create_key(&admin, json!({"name": "reader", "scopes": ["memory:read"]}))
        .await;
    let key = reader.str("api_key");
    for path in [
        "/api/v1/memory/../users",
        "//api//v1//users",
        "/api/v1/./users",
        "/api/v1%2Fusers",
        "/api/v1/%2e%2e/v1/users",
    ] {
        let reply = stack.get(path, key).await;
        assert_eq!(
            reply.status, 403,
            "{path} dodged the users rule: {reply:#?}"
        );
        reply.expect_error(403, "forbidden", &lacks("users:read"));
    }
}

#[tokio::test]
async fn wildcard_scope_holds_every_action() {
    // The default policy mints only the listed scopes; allow memory:* too.
    let allowed = "memory:read,memory:write,users:read,users:write,conversations:read,\
                   conversations:write,tenant:read,tenant:admin,memory:*";
    let options = StackOptions {
        control_plane_args: vec!["--allowed-scopes".into(), allowed.into()],
        ..Default::default()
    };
    let stack = Stack::start_with(options).await;
    let admin = stack.tenant().api_key.clone();
    let created = stack
        .create_key(
            &admin,
            json!({"name": "memory-all", "scopes": ["memory:*"]}),
        )
        .await;
    let key = created.str("api_key");
    for method in [Method::GET, Method::POST, Method::DELETE] {
        let reply = stack
            .send(
                stack
                    .request(method.clone(), "/api/v1/memory/x")
                    .bearer_auth(key),
            )
            .await;
        assert_eq!(reply.status, 200, "{method} with memory:*: {reply:#?}");
    }
    stack
        .get("/api/v1/users", key)
        .await
        .expect_error(403, "forbidden", &lacks("users:read"));
}

#[tokio::test]
async fn public_routes_and_cors_preflight_need_no_key() {
    let stack = Stack::start().await;
    // POST /api/v1/tenants is public (the stack registered a tenant that way);
    // other methods on it are not.
    let reply = stack
        .send(stack.request(Method::GET, "/api/v1/tenants"))
        .await;
    reply.expect_error(401, "unauthorized", "Missing or invalid API key");

    let preflight = stack
        .request(Method::OPTIONS, "/api/v1/memory")
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization");
    let reply = stack.send(preflight).await;
    reply.expect(200);
    assert_eq!(
        reply.json["method"], "OPTIONS",
        "preflight did not reach the upstream: {reply:#?}"
    );
    assert_eq!(reply.echoed_header("x-key-id"), None);

    // OPTIONS without Access-Control-Request-Method is no preflight.
    let reply = stack
        .send(stack.request(Method::OPTIONS, "/api/v1/memory"))
        .await;
    reply.expect_error(401, "unauthorized", "Missing or invalid API key");
}
