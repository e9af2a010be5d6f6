//! Revocation, rotation and expiry as users live them (SPEC §6, §7).
//! Every revocation is timed from the control plane's answer to the first
//! 401 at Envoy, printed, and held to the 1 s bound.

use keygate_e2e::{rfc3339, unix_now, Stack, REVOCATION_BOUND};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

const INVALID: &str = "Invalid API key";
const PATH: &str = "/api/v1/memory";

/// Asserts `key` is refused on 20 fresh connections (so on every worker).
async fn assert_refused_everywhere(stack: &Stack, key: &str, message: &str) {
    for _ in 0..20 {
        stack
            .get(PATH, key)
            .await
            .expect_error(401, "unauthorized", message);
    }
}

/// Polls until every worker refuses `key`; returns the time from `since`
/// to the first answer of that steady run of 401s.
async fn time_to_401(stack: &Stack, key: &str, since: Instant) -> Duration {
    let polling = since.elapsed();
    let (_, after) = stack
        .wait_steady(PATH, key, 401, Duration::from_secs(10))
        .await;
    polling + after
}

#[tokio::test]
async fn revocation_reaches_envoy_within_the_bound() {
    let stack = Stack::start().await;
    let admin = stack.tenant().api_key.clone();
    let mut times = Vec::new();
    for i in 0..10 {
        let created = stack
            .create_key(
                &admin,
                json!({"name": format!("doomed {i}"), "scopes": ["memory:read"]}),
            )
            .await;
        let key = created.str("api_key");
        let path = format!("/api/v1/api-keys/{}", created.str("id"));
        let reply = stack.call(Method::DELETE, &path, &admin, json!({})).await;
        let answered = Instant::now();
        reply.expect(200);
        times.push(time_to_401(&stack, key, answered).await);
        assert_refused_everywhere(&stack, key, INVALID).await;
    }
    times.sort();
    let max = times.last().copied().unwrap_or_default();
    println!(
        "revocation time, DELETE answer to first 401 (10 keys): min {:?} median {:?} max {:?}",
        times[0],
        times[times.len() / 2],
        max
    );
    assert!(max < REVOCATION_BOUND, "revocation took {max:?}: {times:?}");
}

#[tokio::test]
async fn rotation_without_grace_kills_the_old_key_now() {
    let stack = Stack::start().await;
    let admin = stack.tenant().api_key.clone();
    let old = stack
        .create_key(
            &admin,
            json!({"name": "rotating", "scopes": ["memory:read"]}),
        )
        .await;
    let path = format!("/api/v1/api-keys/{}/rotate", old.str("id"));
    let rotated = stack.call(Method::POST, &path, &admin, json!({})).await;
    let answered = Instant::now();
    rotated.expect(201);
    let new_key = rotated.str("api_key");
    assert_ne!(new_key, old.str("api_key"));
    assert_eq!(
        rotated.json["scopes"],
        json!(["memory:read"]),
        "{rotated:#?}"
    );
    let took = time_to_401(&stack, old.str("api_key"), answered).await;
    println!("rotation: old key refused {took:?} after the rotate answer");
    assert!(took < REVOCATION_BOUND);
    stack.wait_key_works(new_key).await;
    stack.get(PATH, new_key).await.expect(200);
}

#[tokio::test]
async fn rotation_with_grace_keeps_the_old_key_for_the_grace_period() {
    let stack = Stack::start().await;
    let admin = stack.tenant().api_key.clone();
    let old = stack
        .create_key(
            &admin,
            json!({"name": "graceful", "scopes": ["memory:read"]}),
        )
        .await;
    let old_key = old.str("api_key");
    let path = format!("/api/v1/api-keys/{}/rotate", old.str("id"));
    let grace = Duration::from_secs(3);
    let rotated = stack
        .call(
            Method::POST,
            &path,
            &admin,
            json!({"grace_seconds": grace.as_secs()}),
        )
        .await;
    let answered = Instant::now();
    rotated.expect(201);
    stack.wait_key_works(rotated.str("api_key")).await;
    // Both work during the grace period (checked until 1 s before its end).
    while answered.elapsed() + Duration::from_secs(1) < grace {
        stack.get(PATH, old_key).await.expect(200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = time_to_401(&stack, old_key, answered).await;
    println!("rotation with {grace:?} grace: old key refused {took:?} after the rotate answer");
    assert!(
        took >= grace - Duration::from_secs(1),
        "old key died early: {took:?}"
    );
    assert!(
        took < grace + Duration::from_secs(2),
        "old key outlived its grace: {took:?}"
    );
}

#[tokio::test]
async fn expired_keys_get_their_own_message() {
    let stack = Stack::start().await;
    let admin = stack.tenant().api_key.clone();
    let past =
        json!({"name": "past", "scopes": ["memory:read"], "expires_at": rfc3339(unix_now() - 60)});
    let reply = stack
        .call(Method::POST, "/api/v1/api-keys", &admin, past)
        .await;
    reply.expect(400);
    assert_eq!(reply.json["error"]["type"], "invalid_request", "{reply:#?}");

    let expires = unix_now() + 3;
    let body =
        json!({"name": "short-lived", "scopes": ["memory:read"], "expires_at": rfc3339(expires)});
    let created = stack.create_key(&admin, body).await;
    let key = created.str("api_key");
    stack.get(PATH, key).await.expect(200);
    let (reply, _) = stack
        .wait_steady(PATH, key, 401, Duration::from_secs(10))
        .await;
    let late = unix_now().saturating_sub(expires);
    println!("expiry: first 401 about {late} s after expires_at (second resolution)");
    reply.expect_error(401, "unauthorized", "API key has expired");
    assert!(late <= 2, "expired key served {late} s too long");
    assert_refused_everywhere(&stack, key, "API key has expired").await;
}

#[tokio::test]
async fn management_api_through_envoy() {
    let stack = Stack::start().await;
    let tenant = stack.tenant().clone();
    let admin = tenant.api_key.as_str();
    let me = stack.get("/api/v1/auth/me", admin).await;
    me.expect(200);
    assert_eq!(me.str("tenant_id"), tenant.tenant_id);

    let created = stack.create_key(admin, json!({"name": "pro key", "scopes": ["users:read"], "environment": "test", "rate_limit_tier": "pro"})).await;
    assert!(
        created.str("api_key").starts_with("rk_test_"),
        "{created:#?}"
    );
    assert_eq!(created.str("api_key_prefix"), &created.str("api_key")[..12]);
    let reply = stack.get("/api/v1/users", created.str("api_key")).await;
    assert_eq!(reply.echoed_header("x-key-environment"), Some("test"));
    assert_eq!(reply.echoed_header("x-rate-tier"), Some("pro"));

    // Listing never shows a key or its hash.
    let list = stack.get("/api/v1/api-keys", admin).await;
    list.expect(200);
    assert!(
        list.json["data"].as_array().is_some_and(|d| d.len() >= 2),
        "{list:#?}"
    );
    for secret in [admin, created.str("api_key")] {
        assert!(!list.text.contains(secret), "list shows a key");
        assert!(
            !list.text.contains(&keygate::key::hash_hex(secret)),
            "list shows a hash"
        );
    }

    // Another tenant cannot see or touch this tenant's keys.
    let other = stack.new_tenant("intruder").await;
    let path = format!("/api/v1/api-keys/{}", created.str("id"));
    let reply = stack
        .call(Method::DELETE, &path, &other.api_key, json!({}))
        .await;
    reply.expect(404);
    stack
        .get("/api/v1/users", created.str("api_key"))
        .await
        .expect(200);

    // Scopes guard the management calls; unknown scopes are refused.
    let reply = stack
        .call(
            Method::POST,
            "/api/v1/api-keys",
            created.str("api_key"),
            json!({"name": "x", "scopes": ["users:read"]}),
        )
        .await;
    assert_eq!(reply.status, 403, "{reply:#?}");
    let reply = stack
        .call(
            Method::POST,
            "/api/v1/api-keys",
            admin,
            json!({"name": "x", "scopes": ["root:everything"]}),
        )
        .await;
    reply.expect(400);
    assert_eq!(reply.json["error"]["type"], "invalid_request", "{reply:#?}");
}
