//! The management API of SPEC §6, row by row, against the real server:
//! tenants, api-keys create/list/revoke/rotate, auth/me, tenant isolation,
//! the control plane's own authentication, and every 400.

// Test code: a failed unwrap or assertion is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{hash, now, rfc3339, Server};
use serde_json::{json, Value};

use keygate::scopes::DEFAULT_SCOPES;

fn assert_error(reply: &common::Reply, status: u16, kind: &str, message: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        reply.json(),
        json!({"error": {"type": kind, "message": message}})
    );
    if status == 401 {
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Bearer realm=\"keygate\"")
        );
    }
}

/// A 400 `invalid_request` naming `field` (in `field` and in the message).
fn assert_invalid(reply: &common::Reply, field: &str) {
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let v = reply.json();
    assert_eq!(v["error"]["type"], "invalid_request", "{v}");
    assert_eq!(v["error"]["field"], field, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains(field), "message {message:?} names {field}");
}

#[tokio::test]
async fn tenant_creation_answers_a_key_with_every_default_scope() {
    let server = Server::start().await;
    let body = r#"{"name":"Acme","email":"ops@acme.test"}"#;
    let reply = server
        .call("POST", "/api/v1/tenants", None, Some(body))
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let v = reply.json();
    let key = v["api_key"].as_str().unwrap();
    let tenant = v["tenant_id"].as_str().unwrap();
    assert!(tenant.starts_with("org_") && tenant.len() == 20, "{tenant}");
    assert!(key.starts_with("rk_live_"), "{key}");
    assert_eq!(v["api_key_prefix"], &key[..12]);
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("not be shown again"));

    let me = server.call("GET", "/api/v1/auth/me", Some(key), None).await;
    assert_eq!(me.status, 200, "{}", me.text());
    let me = me.json();
    assert_eq!(me["tenant_id"], tenant);
    assert_eq!(me["key"]["scopes"], json!(DEFAULT_SCOPES));
    assert_eq!(me["key"]["rate_limit_tier"], "free");
    assert_eq!(me["key"]["environment"], "live");
    assert_eq!(me["key"]["id"], v["key_id"]);
}

#[tokio::test]
async fn tenant_creation_rejects_bad_input_naming_the_field() {
    let server = Server::start().await;
    let long = "x".repeat(101);
    let cases = [
        ("{", "body"),
        ("[]", "body"),
        ("", "body"),
        (r#"{"email":"a@b.test"}"#, "name"),
        (
            &format!(r#"{{"name":"{long}","email":"a@b.test"}}"#),
            "name",
        ),
        (r#"{"name":"A","email":"not-an-email"}"#, "email"),
        (r#"{"name":"A"}"#, "email"),
        (r#"{"name":"A","email":"a@b.test","plan":"gold"}"#, "plan"),
        (r#"{"name":7,"email":"a@b.test"}"#, "name"),
    ];
    for (body, field) in cases {
        let reply = server
            .call("POST", "/api/v1/tenants", None, Some(body))
            .await;
        assert_invalid(&reply, field);
    }
}

#[tokio::test]
async fn create_key_answers_every_field_once() {
    let server = Server::start().await;
    let t = server.create_tenant("acme").await;
    server.set_plan(&t.id, "pro").await;
    let expires = rfc3339(now() + 3600);
    let v = server
        .create_key(
            &t.key,
            json!({"name": "ci", "scopes": ["memory:read", "users:write"], "environment": "test",
                   "expires_at": expires, "rate_limit_tier": "pro"}),
        )
        .await;
    let key = v["api_key"].as_str().unwrap();
    assert!(key.starts_with("rk_test_"), "{key}");
    assert!(v["id"].as_str().unwrap().starts_with("key_"));
    assert_eq!(v["name"], "ci");
    assert_eq!(v["api_key_prefix"], &key[..12]);
    assert_eq!(v["scopes"], json!(["memory:read", "users:write"]));
    assert_eq!(v["environment"], "test");
    assert_eq!(v["rate_limit_tier"], "pro");
    assert_eq!(v["expires_at"], expires);
    assert!(v["created_at"].as_str().unwrap().ends_with('Z'));

    // Defaults: live, free, no expiry.
    let d = server
        .create_key(&t.key, json!({"name": "d", "scopes": ["memory:read"]}))
        .await;
    assert_eq!(d["environment"], "live");
    assert_eq!(d["rate_limit_tier"], "free");
    assert_eq!(d["expires_at"], Value::Null);

    // The new key works, and is never shown again.
    let me = server.call("GET", "/api/v1/auth/me", Some(key), None).await;
    assert_eq!(me.status, 200);
    let list = server
        .call("GET", "/api/v1/api-keys", Some(&t.key), None)
        .await;
    assert!(!list.text().contains(key));
}

#[tokio::test]
async fn create_key_rejects_every_bad_input_naming_the_field() {
    let server = Server::start().await;
    let t = server.create_tenant("acme").await;
    let past = rfc3339(now() - 60);
    let long = "n".repeat(101);
    let cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "body"),
        ("\"a string\"".into(), "body"),
        (r#"{"scopes":["memory:read"]}"#.into(), "name"),
        (
            format!(r#"{{"name":"{long}","scopes":["memory:read"]}}"#),
            "name",
        ),
        (r#"{"name":"  ","scopes":["memory:read"]}"#.into(), "name"),
        (r#"{"name":"k","scopes":[]}"#.into(), "scopes"),
        (
            r#"{"name":"k","scopes":["memory:delete"]}"#.into(),
            "scopes",
        ),
        (r#"{"name":"k","scopes":"memory:read"}"#.into(), "scopes"),
        (
            r#"{"name":"k","scopes":["memory:read"],"rate_limit_tier":"gold"}"#.into(),
            "rate_limit_tier",
        ),
        (
            r#"{"name":"k","scopes":["memory:read"],"environment":"prod"}"#.into(),
            "environment",
        ),
        (
            format!(r#"{{"name":"k","scopes":["memory:read"],"expires_at":"{past}"}}"#),
            "expires_at",
        ),
        (
            r#"{"name":"k","scopes":["memory:read"],"expires_at":"next week"}"#.into(),
            "expires_at",
        ),
        (
            r#"{"name":"k","scopes":["memory:read"],"expires_at":1893456000}"#.into(),
            "expires_at",
        ),
        (
            r#"{"name":"k","scopes":["memory:read"],"org_id":"org_0000000000000001"}"#.into(),
            "org_id",
        ),
    ];
    for (body, field) in &cases {
        let reply = server
            .call("POST", "/api/v1/api-keys", Some(&t.key), Some(body))
            .await;
        assert_invalid(&reply, field);
    }
    let huge = format!(
        r#"{{"name":"{}","scopes":["memory:read"]}}"#,
        "x".repeat(70_000)
    );
    let reply = server
        .call("POST", "/api/v1/api-keys", Some(&t.key), Some(&huge))
        .await;
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert_eq!(reply.json()["error"]["field"], "body");
    // Nothing was created by any of them.
    let list = server
        .call("GET", "/api/v1/api-keys", Some(&t.key), None)
        .await;
    assert_eq!(list.json()["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_control_plane_authenticates_every_call_itself() {
    let server = Server::start().await;
    let t = server.create_tenant("acme").await;
    let body = r#"{"name":"k","scopes":["memory:read"]}"#;
    let post = |key: Option<&str>| {
        let key = key.map(str::to_string);
        let server = &server;
        async move {
            server
                .call("POST", "/api/v1/api-keys", key.as_deref(), Some(body))
                .await
        }
    };
    assert_error(
        &post(None).await,
        401,
        "unauthorized",
        "Missing or invalid API key",
    );
    let mut typo = t.key.clone().into_bytes();
    typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    assert_error(
        &post(Some(&typo)).await,
        401,
        "unauthorized",
        "Invalid API key",
    );
    assert_error(
        &post(Some("rk_live_short")).await,
        401,
        "unauthorized",
        "Invalid API key",
    );
    // Well-formed, right checksum, but not minted here.
    let stranger = keygate::key::generate("rk", keygate::key::Environment::Live).unwrap();
    assert_error(
        &post(Some(&stranger)).await,
        401,
        "unauthorized",
        "Invalid API key",
    );

    // X-API-Key and ?api_key= are first-class; two different keys conflict.
    let me = server
        .call_with(
            "GET",
            "/api/v1/auth/me",
            None,
            None,
            &[("x-api-key", &t.key)],
        )
        .await;
    assert_eq!(me.status, 200);
    let me = server
        .call(
            "GET",
            &format!("/api/v1/auth/me?api_key={}", t.key),
            None,
            None,
        )
        .await;
    assert_eq!(me.status, 200);
    let both = server
        .call_with(
            "GET",
            "/api/v1/auth/me",
            Some(&t.key),
            None,
            &[("x-api-key", &stranger)],
        )
        .await;
    assert_error(&both, 401, "unauthorized", "Invalid API key");

    // Scopes: tenant:admin to write, tenant:read (or admin) to list.
    let reader = server
        .create_key(&t.key, json!({"name": "r", "scopes": ["tenant:read"]}))
        .await;
    let reader = reader["api_key"].as_str().unwrap();
    let memory = server
        .create_key(&t.key, json!({"name": "m", "scopes": ["memory:read"]}))
        .await;
    let memory = memory["api_key"].as_str().unwrap();
    assert_error(
        &post(Some(reader)).await,
        403,
        "forbidden",
        "API key lacks required scope: tenant:admin",
    );
    assert_eq!(
        server
            .call("GET", "/api/v1/api-keys", Some(reader), None)
            .await
            .status,
        200
    );
    let listed = server
        .call("GET", "/api/v1/api-keys", Some(memory), None)
        .await;
    assert_error(
        &listed,
        403,
        "forbidden",
        "API key lacks required scope: tenant:read",
    );
    assert_eq!(
        server
            .call("GET", "/api/v1/auth/me", Some(memory), None)
            .await
            .status,
        200
    );

    // X-Org-Id naming another organisation.
    let other = server
        .call_with(
            "GET",
            "/api/v1/auth/me",
            Some(&t.key),
            None,
            &[("x-org-id", "org_00000000000000aa")],
        )
        .await;
    assert_error(
        &other,
        403,
        "forbidden",
        "API key does not belong to organization org_00000000000000aa",
    );
    let own = server
        .call_with(
            "GET",
            "/api/v1/auth/me",
            Some(&t.key),
            None,
            &[("x-org-id", &t.id)],
        )
        .await;
    assert_eq!(own.status, 200);
}

#[tokio::test]
async fn list_shows_every_key_of_the_tenant_but_never_a_key_or_hash() {
    let server = Server::start().await;
    let t = server.create_tenant("acme").await;
    let made = server
        .create_key(&t.key, json!({"name": "k1", "scopes": ["memory:read"]}))
        .await;
    let key = made["api_key"].as_str().unwrap().to_string();
    let reply = server
        .call("GET", "/api/v1/api-keys", Some(&t.key), None)
        .await;
    assert_eq!(reply.status, 200);
    let v = reply.json();
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let fields: Vec<&str> = data[1]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = vec![
        "api_key_prefix",
        "created_at",
        "environment",
        "expires_at",
        "id",
        "metadata",
        "last_used_at",
        "name",
        "rate_limit_tier",
        "rate_limits",
        "external_id",
        "revoked_at",
        "scopes",
        "quota",
        "spend_cap",
    ];
    expected.sort_unstable();
    let mut fields = fields;
    fields.sort_unstable();
    assert_eq!(fields, expected);
    assert_eq!(data[0]["id"], t.key_id.as_str());
    assert_eq!(data[1]["id"], made["id"]);
    let text = reply.text();
    for secret in [key.clone(), t.key.clone(), keygate::key::hash_hex(&key)] {
        assert!(!text.contains(&secret), "the list leaks {secret}");
    }

    // The database holds neither key, only the hash.
    let stored = server.stored().await;
    let contains = |needle: &[u8]| stored.windows(needle.len()).any(|w| w == needle);
    assert!(contains(&hash(&key)), "the hash is stored");
    assert!(!contains(key.as_bytes()), "the raw key is in the database");
    assert!(
        !contains(t.key.as_bytes()),
        "the raw key is in the database"
    );
    assert!(!server.log().contains(&key), "the raw key is in the log");
    assert!(
        !server.log().contains(common::FEED_TOKEN),
        "the feed token is in the log"
    );
}

#[tokio::test]
async fn revoke_invalidates_at_once_and_is_idempotent() {
    let server = Server::start().await;
    let t = server.create_tenant("acme").await;
    let made = server
        .create_key(&t.key, json!({"name": "k", "scopes": ["memory:read"]}))
        .await;
    let (id, key) = (
        made["id"].as_str().unwrap(),
        made["api_key"].as_str().unwrap(),
    );
    assert_eq!(
        server
            .call("GET", "/api/v1/auth/me", Some(key), None)
            .await
            .status,
        200
    );

    let path = format!("/api/v1/api-keys/{id}");
    let reply = server.call("DELETE", &path, Some(&t.key), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let revoked_at = reply.json()["revoked_at"].as_str().unwrap().to_string();
    assert_eq!(reply.json()["id"], id);
    let me = server.call("GET", "/api/v1/auth/me", Some(key), None).await;
    assert_error(&me, 401, "unauthorized", "Invalid API key");

    let again = server.call("DELETE", &path, Some(&t.key), None).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["revoked_at"], revoked_at.as_str());
    let list = server
        .call("GET", "/api/v1/api-keys", Some(&t.key), None)
        .await
        .json();
    assert_eq!(list["data"][1]["revoked_at"], revoked_at.as_str());

    let unknown = server
        .call(
            "DELETE",
            "/api/v1/api-keys/key_0000000000000001",
            Some(&t.key),
            None,
        )
        .await;
    assert_error(&unknown, 404, "not_found", "API key not found");
    for malformed in ["nonsense", "org_0000000000000001"] {
        let path = format!("/api/v1/api-keys/{malformed}");
        let reply = server.call("DELETE", &path, Some(&t.key), None).await;
        assert_invalid(&reply, "id");
    }
}

#[tokio::test]
async fn another_tenants_key_is_404_as_if_it_did_not_exist() {
    let server = Server::start().await;
    let a = server.create_tenant("a").await;
    let b = server.create_tenant("b").await;
    let a_key = server
        .create_key(&a.key, json!({"name": "k", "scopes": ["memory:read"]}))
        .await;
    let a_id = a_key["id"].as_str().unwrap();

    let revoke = server
        .call(
            "DELETE",
            &format!("/api/v1/api-keys/{a_id}"),
            Some(&b.key),
            None,
        )
        .await;
    assert_error(&revoke, 404, "not_found", "API key not found");
    let rotate = server
        .call(
            "POST",
            &format!("/api/v1/api-keys/{a_id}/rotate"),
            Some(&b.key),
            Some("{}"),
        )
        .await;
    assert_error(&rotate, 404, "not_found", "API key not found");
    let list = server
        .call("GET", "/api/v1/api-keys", Some(&b.key), None)
        .await
        .json();
    let ids: Vec<&Value> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["id"])
        .collect();
    assert_eq!(ids, vec![&json!(b.key_id)]);
    // A's key is untouched.
    let me = server
        .call(
            "GET",
            "/api/v1/auth/me",
            Some(a_key["api_key"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["tenant_id"], a.id.as_str());
}

/// Rotates `old` with `body` (no grace), checks the copy and the old key's death.
async fn rotate_now(server: &Server, admin: &str, old: &Value, body: Option<&str>) -> Value {
    let path = format!("/api/v1/api-keys/{}/rotate", old["id"].as_str().unwrap());
    let reply = server.call("POST", &path, Some(admin), body).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let new = reply.json();
    assert_ne!(new["id"], old["id"]);
    assert_ne!(new["api_key"], old["api_key"]);
    for field in [
        "name",
        "scopes",
        "environment",
        "rate_limit_tier",
        "expires_at",
    ] {
        assert_eq!(new[field], old[field], "{field}");
    }
    assert_eq!(new["previous_key"]["id"], old["id"]);
    assert!(new["previous_key"]["revoked_at"].is_string());
    let old_me = server
        .call("GET", "/api/v1/auth/me", old["api_key"].as_str(), None)
        .await;
    assert_error(&old_me, 401, "unauthorized", "Invalid API key");
    let new_me = server
        .call("GET", "/api/v1/auth/me", new["api_key"].as_str(), None)
        .await;
    assert_eq!(new_me.status, 200);
    new
}

#[tokio::test]
async fn rotate_without_grace_kills_the_old_key_now() {
    let server = Server::start().await;
    let t = server.create_tenant("acme").await;
    server.set_plan(&t.id, "pro").await;
    let first = server
        .create_key(
            &t.key,
            json!({"name": "svc", "scopes": ["memory:read", "users:read"],
                                   "environment": "test", "rate_limit_tier": "pro",
                                   "expires_at": rfc3339(now() + 3600)}),
        )
        .await;
    let second = rotate_now(&server, &t.key, &first, None).await;
    let third = rotate_now(&server, &t.key, &second, Some(r#"{"grace_seconds":0}"#)).await;
    assert!(third["api_key"].as_str().unwrap().starts_with("rk_test_"));
    // A revoked key cannot be rotated.
    let path = format!("/api/v1/api-keys/{}/rotate", first["id"].as_str().unwrap());
    let again = server.call("POST", &path, Some(&t.key), None).await;
    assert_error(&again, 409, "conflict", "API key is revoked or expired");
}

#[tokio::test]
async fn rotate_with_grace_keeps_the_old_key_until_the_grace_ends() {
    let server = Server::start().await;
    let t = server.create_tenant("acme").await;
    let old = server
        .create_key(&t.key, json!({"name": "svc", "scopes": ["memory:read"]}))
        .await;
    let old_key = old["api_key"].as_str().unwrap();
    let path = format!("/api/v1/api-keys/{}/rotate", old["id"].as_str().unwrap());

    for (body, field) in [
        (r#"{"grace_seconds":-5}"#, "grace_seconds"),
        (r#"{"grace_seconds":"1"}"#, "grace_seconds"),
        (r#"{"grace_seconds":9999999999}"#, "grace_seconds"),
        (r#"{"grace":1}"#, "grace"),
        ("{", "body"),
    ] {
        assert_invalid(
            &server.call("POST", &path, Some(&t.key), Some(body)).await,
            field,
        );
    }

    let before = now();
    let reply = server
        .call("POST", &path, Some(&t.key), Some(r#"{"grace_seconds":2}"#))
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let new = reply.json();
    let previous = &new["previous_key"];
    assert_eq!(previous["revoked_at"], Value::Null);
    let until = previous["expires_at"].as_str().unwrap();
    assert!(
        until >= rfc3339(before + 2).as_str() && until <= rfc3339(now() + 2).as_str(),
        "{until}"
    );
    // Both work during the grace period…
    assert_eq!(
        server
            .call("GET", "/api/v1/auth/me", Some(old_key), None)
            .await
            .status,
        200
    );
    let new_key = new["api_key"].as_str().unwrap();
    assert_eq!(
        server
            .call("GET", "/api/v1/auth/me", Some(new_key), None)
            .await
            .status,
        200
    );
    // …then the old one has expired.
    tokio::time::sleep(std::time::Duration::from_millis(3200)).await;
    let me = server
        .call("GET", "/api/v1/auth/me", Some(old_key), None)
        .await;
    assert_error(&me, 401, "unauthorized", "API key has expired");
    assert_eq!(
        server
            .call("GET", "/api/v1/auth/me", Some(new_key), None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn auth_me_answers_any_valid_key_and_refuses_an_expired_one() {
    let server = Server::start().await;
    let t = server.create_tenant("acme").await;
    let expires = rfc3339(now() + 2);
    let made = server
        .create_key(
            &t.key,
            json!({"name": "short", "scopes": ["users:read"], "expires_at": expires}),
        )
        .await;
    let key = made["api_key"].as_str().unwrap();
    let me = server.call("GET", "/api/v1/auth/me", Some(key), None).await;
    assert_eq!(me.status, 200);
    let v = me.json();
    assert_eq!(v["tenant_id"], t.id.as_str());
    assert_eq!(v["key"]["id"], made["id"]);
    assert_eq!(v["key"]["scopes"], json!(["users:read"]));
    assert_eq!(v["key"]["expires_at"], expires);
    assert!(v["key"].get("api_key").is_none());

    tokio::time::sleep(std::time::Duration::from_millis(3200)).await;
    let me = server.call("GET", "/api/v1/auth/me", Some(key), None).await;
    assert_error(&me, 401, "unauthorized", "API key has expired");
}

#[tokio::test]
async fn other_routes_and_methods_answer_json() {
    let server = Server::start().await;
    assert_eq!(server.call("GET", "/healthz", None, None).await.status, 200);
    assert_error(
        &server.call("GET", "/nope", None, None).await,
        404,
        "not_found",
        "Route not found",
    );
    assert_error(
        &server
            .call("PUT", "/api/v1/tenants", None, Some("{}"))
            .await,
        405,
        "method_not_allowed",
        "Method not allowed",
    );
}
