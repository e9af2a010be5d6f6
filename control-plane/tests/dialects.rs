//! The seed dialects of the control plane: `--error-format` for every JSON
//! error (the router's and hyper's own refusals) and `--key-format
//! prefix_secret` minting and accepting `<prefix>_<secret><check>` keys.

// Test code: a failed unwrap or assertion is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{Server, BIN};
use serde_json::{json, Value};
use std::process::Command;

const KEY_BODY: &str = r#"{"name":"k","scopes":["memory:read"]}"#;

/// A 401 (no key), a 403 (missing scope), a 400 naming the field and a 404,
/// each in `format`; returns the four bodies.
async fn refusals(server: &Server) -> [Value; 4] {
    let tenant = server.create_tenant("dialects").await;
    let reader = server
        .create_key(&tenant.key, json!({"name": "r", "scopes": ["memory:read"]}))
        .await;
    let reader = reader["api_key"].as_str().unwrap();
    let unauthorized = server
        .call("POST", "/api/v1/api-keys", None, Some(KEY_BODY))
        .await;
    assert_eq!(unauthorized.status, 401, "{}", unauthorized.text());
    assert_eq!(
        unauthorized.header("www-authenticate"),
        Some(r#"Bearer realm="keygate""#)
    );
    assert_eq!(
        unauthorized.header("content-type"),
        Some("application/json")
    );
    let forbidden = server
        .call("POST", "/api/v1/api-keys", Some(reader), Some(KEY_BODY))
        .await;
    assert_eq!(forbidden.status, 403, "{}", forbidden.text());
    let invalid = server
        .call(
            "POST",
            "/api/v1/api-keys",
            Some(&tenant.key),
            Some(r#"{"name":"","scopes":["memory:read"]}"#),
        )
        .await;
    assert_eq!(invalid.status, 400, "{}", invalid.text());
    let missing = server.call("GET", "/nowhere", None, None).await;
    assert_eq!(missing.status, 404, "{}", missing.text());
    for reply in [&unauthorized, &forbidden, &invalid, &missing] {
        println!("{} {}", reply.status, reply.text());
    }
    [
        unauthorized.json(),
        forbidden.json(),
        invalid.json(),
        missing.json(),
    ]
}

#[tokio::test]
async fn the_keygate_format_is_the_default() {
    let server = Server::start().await;
    let [unauthorized, forbidden, invalid, missing] = refusals(&server).await;
    assert_eq!(
        unauthorized,
        json!({"error": {"type": "unauthorized", "message": "Missing or invalid API key"}})
    );
    assert_eq!(
        forbidden,
        json!({"error": {"type": "forbidden", "message": "API key lacks required scope: tenant:admin"}})
    );
    assert_eq!(invalid["error"]["type"], "invalid_request");
    assert_eq!(invalid["error"]["field"], "name");
    assert_eq!(
        missing,
        json!({"error": {"type": "not_found", "message": "Route not found"}})
    );
}

#[tokio::test]
async fn the_flat_format() {
    let server = Server::start_with(&["--error-format", "flat"]).await;
    let [unauthorized, forbidden, invalid, missing] = refusals(&server).await;
    assert_eq!(
        unauthorized,
        json!({"error": "Unauthorized", "message": "Missing or invalid API key"})
    );
    assert_eq!(
        forbidden,
        json!({"error": "Forbidden", "message": "API key lacks required scope: tenant:admin"})
    );
    assert_eq!(
        invalid,
        json!({"error": "Bad Request", "message": "name must not be empty", "field": "name"})
    );
    assert_eq!(
        missing,
        json!({"error": "Not Found", "message": "Route not found"})
    );
}

#[tokio::test]
async fn the_openai_format() {
    let server = Server::start_with(&["--error-format", "openai"]).await;
    let [unauthorized, forbidden, invalid, missing] = refusals(&server).await;
    assert_eq!(
        unauthorized,
        json!({"error": {"message": "Missing or invalid API key", "type": "authentication_error",
                         "param": null, "code": "missing_api_key"}})
    );
    assert_eq!(forbidden["error"]["type"], "permission_error");
    assert_eq!(forbidden["error"]["code"], "insufficient_scope");
    assert_eq!(
        invalid,
        json!({"error": {"message": "name must not be empty", "type": "invalid_request_error",
                         "param": "name", "code": "invalid_request"}})
    );
    assert_eq!(missing["error"]["code"], "not_found");
    let bad = server
        .call("GET", "/api/v1/auth/me", Some("rk_live_nope"), None)
        .await;
    assert_eq!(bad.status, 401);
    assert_eq!(bad.json()["error"]["code"], "invalid_api_key");
}

/// hyper's own 431 (headers over the limit) is rewritten in the dialect too.
#[tokio::test]
async fn hypers_refusals_follow_the_format() {
    let server = Server::start_with(&["--error-format", "flat"]).await;
    let huge = "x".repeat(300 * 1024);
    let reply = server
        .call_with("GET", "/healthz", None, None, &[("x-big", &huge)])
        .await;
    assert_eq!(reply.status, 431, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({"error": "Request Header Fields Too Large", "message": "Request headers are too large"})
    );
}

#[test]
fn unknown_formats_are_refused_at_start() {
    for (flag, says) in [
        ("--error-format", "keygate, flat or openai"),
        ("--key-format", "prefix_env_secret or prefix_secret"),
    ] {
        let out = Command::new(BIN)
            .args(["serve", flag, "nope", "--listen", "127.0.0.1:0"])
            .env("KEYGATE_FEED_TOKEN", common::FEED_TOKEN)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} nope was accepted");
        assert!(stderr.contains(flag) && stderr.contains(says), "{stderr}");
    }
}

#[tokio::test]
async fn prefix_secret_keys_are_minted_and_accepted() {
    let server =
        Server::start_with(&["--key-prefix", "raeh", "--key-format", "prefix_secret"]).await;
    let tenant = server.create_tenant("raeh").await;
    let is_raeh = |key: &str| {
        let body = key.strip_prefix("raeh_").unwrap_or("");
        body.len() == 49 && body.bytes().all(|c| c.is_ascii_alphanumeric())
    };
    assert!(is_raeh(&tenant.key), "{}", tenant.key);
    let created = server
        .create_key(&tenant.key, json!({"name": "k", "scopes": ["memory:read"]}))
        .await;
    let key = created["api_key"].as_str().unwrap();
    println!("minted {}…", &key[..12]);
    assert!(is_raeh(key), "{key}");
    assert_eq!(created["api_key_prefix"], &key[..12]);
    assert_eq!(created["environment"], "live");

    let me = server.call("GET", "/api/v1/auth/me", Some(key), None).await;
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(me.json()["key"]["environment"], "live");

    let env_key = keygate::key::generate("raeh", keygate::key::Environment::Live).unwrap();
    let refused = server
        .call("GET", "/api/v1/auth/me", Some(&env_key), None)
        .await;
    assert_eq!(refused.status, 401, "{}", refused.text());

    let test = server
        .call(
            "POST",
            "/api/v1/api-keys",
            Some(&tenant.key),
            Some(r#"{"name":"t","scopes":["memory:read"],"environment":"test"}"#),
        )
        .await;
    assert_eq!(test.status, 400, "{}", test.text());
    assert_eq!(test.json()["error"]["field"], "environment");
}
