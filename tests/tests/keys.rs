//! Presenting a key, what the upstream sees, and the errors (SPEC §2, §3, §4).

use keygate::key::Environment;
use keygate_e2e::{Reply, Stack};
use reqwest::Method;
use serde_json::json;

const MISSING: &str = "Missing or invalid API key";
const INVALID: &str = "Invalid API key";

/// Asserts the upstream saw the key's identity and no credential.
fn assert_identity_without_key(reply: &Reply, org: &str) {
    reply.expect(200);
    assert_eq!(reply.echoed_header("x-org-id"), Some(org), "{reply:#?}");
    assert!(reply
        .echoed_header("x-key-id")
        .unwrap_or("")
        .starts_with("key_"));
    assert!(reply
        .echoed_header("x-key-scopes")
        .unwrap_or("")
        .contains("memory:read"));
    assert!(matches!(
        reply.echoed_header("x-key-environment"),
        Some("live" | "test")
    ));
    assert!(reply.echoed_header("x-rate-tier").is_some(), "{reply:#?}");
    for header in ["authorization", "x-api-key"] {
        assert_eq!(
            reply.echoed_header(header),
            None,
            "{header} reached the upstream"
        );
    }
    assert!(
        reply.json["query_params"].get("api_key").is_none(),
        "{reply:#?}"
    );
}

#[tokio::test]
async fn a_key_works_from_every_source_and_is_stripped() {
    let stack = Stack::start().await;
    let tenant = stack.tenant();
    let (key, org) = (tenant.api_key.as_str(), tenant.tenant_id.as_str());
    let get = || stack.request(Method::GET, "/api/v1/memory/notes");

    for scheme in ["Bearer", "bearer", "BEARER"] {
        let reply = stack
            .send(get().header("authorization", format!("{scheme} {key}")))
            .await;
        assert_identity_without_key(&reply, org);
    }
    let reply = stack.send(get().header("x-api-key", key)).await;
    assert_identity_without_key(&reply, org);

    let path = format!("/api/v1/memory/notes?x=1&api_key={key}&y=2");
    let reply = stack.send(stack.request(Method::GET, &path)).await;
    assert_identity_without_key(&reply, org);
    assert_eq!(reply.json["query_params"], json!({"x": "1", "y": "2"}));

    // The same key in two places is one key.
    let reply = stack
        .send(get().bearer_auth(key).header("x-api-key", key))
        .await;
    assert_identity_without_key(&reply, org);
}

#[tokio::test]
async fn provider_key_passes_through_untouched() {
    let stack = Stack::start().await;
    let key = &stack.tenant().api_key;
    let provider = "sk-provider-0123456789abcdef";
    let reply = stack
        .send(
            stack
                .request(Method::GET, "/v1/chat")
                .bearer_auth(key)
                .header("x-provider-key", provider),
        )
        .await;
    reply.expect(200);
    assert_eq!(reply.echoed_header("x-provider-key"), Some(provider));

    // A repeated header reaches the upstream with every value, in order.
    let reply = stack
        .send(
            stack
                .request(Method::GET, "/v1/chat")
                .header("x-api-key", key)
                .header("x-trace", "a")
                .header("x-trace", "b"),
        )
        .await;
    reply.expect(200);
    assert_eq!(reply.echoed_header("x-trace"), Some("a, b"), "{reply:#?}");
    assert_eq!(reply.echoed_header("x-api-key"), None);
}

#[tokio::test]
async fn missing_malformed_unknown_and_conflicting_keys_are_401() {
    let stack = Stack::start().await;
    let key = stack.tenant().api_key.clone();
    let other = stack.new_tenant("other").await.api_key;

    let reply = stack
        .send(stack.request(Method::GET, "/api/v1/memory"))
        .await;
    reply.expect_error(401, "unauthorized", MISSING);

    let mut bad_checksum = key.clone();
    let last = bad_checksum.pop().unwrap();
    bad_checksum.push(if last == 'A' { 'B' } else { 'A' });
    let unknown = keygate::key::generate("rk", Environment::Live).unwrap();
    let wrong_prefix = key.replacen("rk_", "sk_", 1);
    let cases = [
        ("malformed", "rk_live_tooshort".to_string()),
        ("bad checksum", bad_checksum),
        ("unknown", unknown),
        ("wrong prefix", wrong_prefix),
        ("oversized", format!("rk_live_{}", "A".repeat(8000))),
    ];
    for (case, bad) in &cases {
        let reply = stack.get("/api/v1/memory", bad).await;
        assert_eq!(reply.status, 401, "{case}: {reply:#?}");
        reply.expect_error(401, "unauthorized", INVALID);
    }

    let conflicting = stack
        .send(
            stack
                .request(Method::GET, "/api/v1/memory")
                .bearer_auth(&key)
                .header("x-api-key", &other),
        )
        .await;
    conflicting.expect_error(401, "unauthorized", INVALID);
    let path = format!("/api/v1/memory?api_key={other}");
    let conflicting = stack
        .send(stack.request(Method::GET, &path).header("x-api-key", &key))
        .await;
    conflicting.expect_error(401, "unauthorized", INVALID);
}

#[tokio::test]
async fn the_upstream_never_sees_spoofed_identity() {
    let stack = Stack::start().await;
    let admin = stack.tenant().clone();
    let created = stack
        .create_key(
            &admin.api_key,
            json!({"name": "reader", "scopes": ["memory:read"]}),
        )
        .await;
    let key = created.str("api_key");
    let spoofed = stack
        .request(Method::GET, "/api/v1/memory")
        .bearer_auth(key)
        .header("x-key-id", "key_0000000000000001")
        .header("x-key-scopes", "memory:write tenant:admin")
        .header("x-key-environment", "live-spoofed")
        .header("x-rate-tier", "unlimited");
    let reply = stack.send(spoofed).await;
    reply.expect(200);
    assert_eq!(reply.echoed_header("x-key-id"), Some(created.str("id")));
    assert_eq!(reply.echoed_header("x-key-scopes"), Some("memory:read"));
    assert_eq!(
        reply.echoed_header("x-org-id"),
        Some(admin.tenant_id.as_str())
    );
    assert_eq!(
        reply.echoed_header("x-rate-tier"),
        Some(created.str("rate_limit_tier"))
    );
    assert_eq!(
        reply.echoed_header("x-key-environment"),
        Some(created.str("environment"))
    );

    // Spoofed scopes grant nothing.
    let write = stack
        .send(
            stack
                .request(Method::POST, "/api/v1/memory")
                .bearer_auth(key)
                .header("x-key-scopes", "memory:write"),
        )
        .await;
    write.expect_error(
        403,
        "forbidden",
        "API key lacks required scope: memory:write",
    );
}

#[tokio::test]
async fn x_org_id_must_name_the_key_organisation() {
    let stack = Stack::start().await;
    let tenant = stack.tenant();
    let other = stack.new_tenant("other org").await;
    let with_org = |org: &str| {
        stack
            .request(Method::GET, "/api/v1/memory")
            .bearer_auth(&tenant.api_key)
            .header("x-org-id", org.to_string())
    };
    let reply = stack.send(with_org(&tenant.tenant_id)).await;
    reply.expect(200);
    assert_eq!(
        reply.echoed_header("x-org-id"),
        Some(tenant.tenant_id.as_str())
    );

    let message = format!(
        "API key does not belong to organization {}",
        other.tenant_id
    );
    let reply = stack.send(with_org(&other.tenant_id)).await;
    reply.expect_error(403, "forbidden", &message);
}
