//! Webhooks against strangers (SPEC §15), through the real Envoy and the
//! real control plane, on one stack:
//!
//! - fairness: tenant A's receivers are a tarpit (accepts, never answers)
//!   and A queues more deliveries than the sender runs at once; tenant B's
//!   delivery still arrives within a second of B's revocation;
//! - egress: on a control plane without `--webhook-allow-cidr`, a webhook
//!   at Envoy's admin port or at any spelling of a loopback or private
//!   address is refused (400 naming `url`); webhooks registered while
//!   loopback was allowed are checked again at delivery and never reach
//!   their receiver (one by address, one by the name `localhost`, which
//!   goes through the sender's resolver); Envoy's log level is unchanged.

use keygate_e2e::receiver::{HookReceiver, Tarpit};
use keygate_e2e::{Reply, Stack, Tenant};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

/// Webhooks of tenant A at the tarpit (the most a tenant may have).
const TARPIT_HOOKS: usize = 20;
/// Keys A revokes: `TARPIT_HOOKS` deliveries each, more than the sender
/// runs at once (64).
const TARPIT_REVOCATIONS: usize = 4;
/// SPEC §15: another tenant's delivery is delayed by less than this.
const FAIR: Duration = Duration::from_secs(1);
const WAIT: Duration = Duration::from_secs(20);

async fn register(stack: &Stack, tenant: &Tenant, url: &str) -> Reply {
    let body = json!({"url": url, "events": ["key.revoked"]});
    stack
        .call(Method::POST, "/api/v1/webhooks", &tenant.api_key, body)
        .await
}

/// Mints a key of `tenant` and revokes it (a `key.revoked` event); returns
/// when the revocation was sent.
async fn revoke_a_key(stack: &Stack, tenant: &Tenant) -> Instant {
    let body = json!({"name": "k", "scopes": ["memory:read"]});
    let key = stack
        .call(Method::POST, "/api/v1/api-keys", &tenant.api_key, body)
        .await;
    key.expect(201);
    let path = format!("/api/v1/api-keys/{}", key.str("id"));
    let revoke = stack.request(Method::DELETE, &path);
    let sent = Instant::now();
    stack
        .send(revoke.bearer_auth(&tenant.api_key))
        .await
        .expect(200);
    sent
}

async fn log_levels(stack: &Stack) -> String {
    let url = stack.admin_url("/logging");
    let reply = stack.client.post(url).send().await.unwrap();
    assert_eq!(reply.status(), 200);
    reply.text().await.unwrap()
}

/// Waits until the latest delivery of `hook` of `tenant` was tried; returns it.
async fn tried(stack: &Stack, tenant: &Tenant, hook: &str) -> serde_json::Value {
    let path = format!("/api/v1/webhooks/{hook}/deliveries");
    let start = Instant::now();
    loop {
        let list = stack.get(&path, &tenant.api_key).await;
        list.expect(200);
        let latest = list.json["data"][0].clone();
        if latest["attempts"].as_u64().unwrap_or(0) > 0 {
            return latest;
        }
        assert!(start.elapsed() < WAIT, "never tried: {}", list.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_webhook_reaches_neither_inside_the_network_nor_other_tenants() {
    let tarpit = Tarpit::start().await;
    let receiver = HookReceiver::start().await;
    let mut stack = Stack::start().await;
    let a = stack.new_tenant("tarpit owner").await;
    let b = stack.new_tenant("bystander").await;

    // Fairness: A fills its share of the sender with sends that never end.
    for _ in 0..TARPIT_HOOKS {
        register(&stack, &a, &tarpit.url).await.expect(201);
    }
    let hook = register(&stack, &b, &receiver.url).await;
    hook.expect(201);
    let port = receiver
        .url
        .replace("http://127.0.0.1:", "")
        .replace("/hook", "");
    let by_name = register(&stack, &b, &format!("http://localhost:{port}/hook")).await;
    by_name.expect(201);
    for _ in 0..TARPIT_REVOCATIONS {
        revoke_a_key(&stack, &a).await;
    }
    let held = tarpit.wait_for(8, WAIT).await;
    assert!(held >= 8, "the tarpit held {held} sends");
    let revoked = revoke_a_key(&stack, &b).await;
    let got = receiver.wait_for(2, WAIT).await;
    let delay = revoked.elapsed();
    println!(
        "tarpit holding {} sends of tenant A; B's 2 deliveries arrived {delay:?} after its revocation",
        tarpit.accepted()
    );
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        delay < FAIR,
        "B's delivery waited {delay:?} behind A's tarpit"
    );

    // Egress: the same database, no CIDR allowed.
    stack.restart_control_plane_allowing(&[]).await;
    let levels = log_levels(&stack).await;
    let admin = stack.ports.admin;
    let mut refused = vec![format!("http://127.0.0.1:{admin}/logging?admin=critical")];
    for host in [
        "localhost",
        "LOCALHOST.",
        "127.0.0.1",
        "127.0.0.2",
        "127.1",
        "0.0.0.0",
        "2130706433",
        "0x7f000001",
        "0177.0.0.1",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "169.254.169.254",
        "10.0.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "[fd00::1]",
        "[fe80::1]",
    ] {
        refused.push(format!("http://{host}:{port}/hook"));
    }
    for url in &refused {
        let reply = register(&stack, &b, url).await;
        reply.expect(400);
        let error = &reply.json["error"];
        assert_eq!(error["type"], "invalid_request", "{url}: {}", reply.text);
        assert_eq!(error["field"], "url", "{url}: {}", reply.text);
        assert_eq!(
            error["message"], "url resolves to a private address",
            "{url}"
        );
    }
    // Registered while loopback was allowed: checked again at delivery.
    revoke_a_key(&stack, &b).await;
    for created in [&hook, &by_name] {
        let latest = tried(&stack, &b, created.str("id")).await;
        assert_eq!(latest["last_error"], "url resolves to a private address");
        assert_eq!(latest["last_response_code"], json!(null));
    }
    assert_eq!(receiver.wait_for(3, Duration::ZERO).await.len(), 2);
    assert_eq!(
        log_levels(&stack).await,
        levels,
        "Envoy's log level changed"
    );
    println!("{} webhook URLs refused at create", refused.len());
}
