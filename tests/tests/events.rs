//! Webhooks and the audit log through the real Envoy (SPEC §11): the
//! routes reach the control plane, a revocation arrives at a loopback
//! receiver as a signed `key.revoked`, and every action of the test is in
//! the audit log with the calling key as actor and, as source, the client's
//! address as Envoy saw it — not what the client claimed in
//! `x-forwarded-for`.

use keygate_e2e::receiver::HookReceiver;
use keygate_e2e::Stack;
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

/// What a client claims to be; Envoy appends the real peer after it.
const SPOOFED: &str = "203.0.113.66";

#[tokio::test]
async fn webhooks_and_the_audit_log_work_through_envoy() {
    let receiver = HookReceiver::start().await;
    let stack = Stack::start().await;
    let admin = stack.tenant().api_key.clone();
    let me = stack.get("/api/v1/auth/me", &admin).await;
    me.expect(200);
    let admin_id = me.json["key"]["id"].as_str().unwrap().to_string();

    let hook = stack
        .send(
            stack
                .request(Method::POST, "/api/v1/webhooks")
                .bearer_auth(&admin)
                .header("x-forwarded-for", SPOOFED)
                .json(&json!({"url": receiver.url, "events": ["key.revoked"]})),
        )
        .await;
    hook.expect(201);
    let secret = hook.str("secret").to_string();
    let key = stack
        .create_key(&admin, json!({"name": "leaked", "scopes": ["memory:read"]}))
        .await;
    let id = key.str("id").to_string();
    let start = Instant::now();
    let revoked = stack
        .send(
            stack
                .request(Method::DELETE, &format!("/api/v1/api-keys/{id}"))
                .bearer_auth(&admin)
                .header("x-forwarded-for", SPOOFED),
        )
        .await;
    revoked.expect(200);
    let got = receiver.wait_for(1, Duration::from_secs(15)).await;
    println!(
        "signed key.revoked at the receiver {:?} after the revocation",
        start.elapsed()
    );
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].signed_with(&secret), "bad signature: {:?}", got[0]);
    let event: serde_json::Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(event["type"], "key.revoked");
    assert_eq!(event["data"]["key_id"], id.as_str());

    let log = stack.get("/api/v1/audit-log?limit=100", &admin).await;
    log.expect(200);
    assert!(!log.text.contains(&secret) && !log.text.contains(key.str("api_key")));
    let entries = log.json["data"].as_array().unwrap();
    for action in ["webhook.create", "api_key.create", "api_key.revoke"] {
        let e = entries
            .iter()
            .find(|e| e["action"] == action)
            .unwrap_or_else(|| panic!("no {action} in {entries:?}"));
        println!("{action}: actor {} source {}", e["actor"], e["source"]);
        assert_eq!(e["actor"], admin_id.as_str(), "{e}");
        // Envoy's view of this loopback client, never the claimed address.
        assert_eq!(e["source"], "127.0.0.1", "{e}");
    }
    let list = stack.get("/api/v1/webhooks", &admin).await;
    list.expect(200);
    assert!(!list.text.contains(&secret));
    let hook_id = hook.str("id");
    let deliveries = stack
        .get(&format!("/api/v1/webhooks/{hook_id}/deliveries"), &admin)
        .await;
    deliveries.expect(200);
    assert_eq!(deliveries.json["data"][0]["event_type"], "key.revoked");
}
