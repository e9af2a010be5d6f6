//! Plans through Envoy (SPEC §10): a tenant cannot mint a tier outside its
//! plan until the operator moves it; the management API is limited by the
//! plan, not by the calling key's data-plane tier, so a backend mints a key
//! per end user in bursts; the operator API takes only the operator token.
//!
//! The harness runs `--tiers pro,free` with the built-in plans: new tenants
//! are on `pro` (tier pro only); plan `free` adds the free tier (60/minute).

use keygate_e2e::{Reply, Stack, OPERATOR_TOKEN};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

const CLIENTS: usize = 8;
const EACH: usize = 25;
/// Every minted key works at Envoy within this long of its 201.
const ACCEPTED_WITHIN: Duration = Duration::from_secs(1);

fn free_key(name: &str, scopes: &[&str]) -> serde_json::Value {
    json!({"name": name, "scopes": scopes, "rate_limit_tier": "free"})
}

#[tokio::test]
async fn a_tier_outside_the_plan_is_403_until_the_operator_allows_it() {
    let stack = Stack::start().await;
    let tenant = stack.tenant();
    let body = free_key("f", &["memory:read"]);
    let refused = stack
        .call(
            Method::POST,
            "/api/v1/api-keys",
            &tenant.api_key,
            body.clone(),
        )
        .await;
    refused.expect(403);
    assert_eq!(refused.json["error"]["type"], "forbidden", "{refused:#?}");
    let message = refused.json["error"]["message"]
        .as_str()
        .unwrap_or_default();
    println!("self-upgrade refused: {message}");
    assert!(
        message.contains("free") && message.contains("plan pro"),
        "{message}"
    );

    stack.set_plan(&tenant.tenant_id, "free").await;
    let created = stack.create_key(&tenant.api_key, body).await;
    assert_eq!(created.json["rate_limit_tier"], "free");
    let reply = stack.get("/api/v1/memory", created.str("api_key")).await;
    assert_eq!(reply.expect(200).echoed_header("x-rate-tier"), Some("free"));
}

#[tokio::test]
async fn the_operator_api_refuses_tenant_keys() {
    let stack = Stack::start().await;
    let tenant = stack.tenant();
    let path = format!("/operator/v1/tenants/{}", tenant.tenant_id);
    for token in [tenant.api_key.as_str(), "not-the-operator-token-0123456789"] {
        let reply = stack.operator_as(token, Method::GET, &path, None).await;
        reply.expect(401);
        assert_eq!(reply.json["error"]["type"], "unauthorized", "{reply:#?}");
    }
    let anonymous = stack
        .send(stack.client.get(stack.operator_url(&path)))
        .await;
    anonymous.expect(401);
    let listed = stack
        .operator(Method::GET, "/operator/v1/tenants", None)
        .await;
    let ids: Vec<&str> = listed.expect(200).json["data"]
        .as_array()
        .map(|d| d.iter().filter_map(|t| t["id"].as_str()).collect())
        .unwrap_or_default();
    assert!(ids.contains(&tenant.tenant_id.as_str()), "{listed:#?}");
    for (what, log) in [
        ("Envoy", stack.envoy_log()),
        ("control plane", stack.control_plane_log()),
    ] {
        assert!(
            !log.contains(OPERATOR_TOKEN),
            "the operator token is in the {what} log"
        );
    }
    let dump = stack
        .send(stack.client.get(stack.admin_url("/config_dump")))
        .await;
    assert!(
        !dump.expect(200).text.contains(OPERATOR_TOKEN),
        "the token is in the config dump"
    );
}

/// Mints `EACH` keys with `admin`; for each, the time from its 201 to its
/// first 200 at Envoy (checked concurrently, so the burst keeps going).
async fn mint_and_check(stack: &Stack, admin: &str, client: usize) -> Vec<(u16, Duration)> {
    let mut checks = Vec::with_capacity(EACH);
    for i in 0..EACH {
        let body = json!({"name": format!("user {client}-{i}"), "scopes": ["memory:read"]});
        let reply = stack
            .call(Method::POST, "/api/v1/api-keys", admin, body)
            .await;
        let minted = Instant::now();
        let status = reply.status;
        let key = reply.json["api_key"].as_str().map(str::to_string);
        let (client, url) = (stack.client.clone(), stack.url("/api/v1/memory"));
        checks.push(tokio::spawn(async move {
            let Some(key) = key else {
                return (status, Duration::MAX);
            };
            while minted.elapsed() < Duration::from_secs(5) {
                let sent = client.get(&url).bearer_auth(&key).send().await;
                if let Ok(response) = sent {
                    if Reply::read(response).await.status == 200 {
                        return (status, minted.elapsed());
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (status, Duration::MAX)
        }));
    }
    let mut out = Vec::with_capacity(EACH);
    for check in checks {
        out.push(check.await.unwrap_or((0, Duration::MAX)));
    }
    out
}

#[tokio::test]
async fn a_burst_of_200_mints_with_a_free_tier_key_all_work_within_a_second() {
    let stack = Stack::start().await;
    let tenant = stack.new_tenant("backend").await;
    stack.set_plan(&tenant.tenant_id, "free").await;
    // The backend's admin key is on the free tier (60/minute at Envoy): the
    // management API must not spend that tier's tokens.
    let admin = stack
        .create_key(&tenant.api_key, free_key("backend", &["tenant:admin"]))
        .await;
    let admin = admin.str("api_key").to_string();

    let start = Instant::now();
    let clients = (0..CLIENTS).map(|c| mint_and_check(&stack, &admin, c));
    let results: Vec<(u16, Duration)> = futures_util::future::join_all(clients)
        .await
        .into_iter()
        .flatten()
        .collect();
    let took = start.elapsed();
    let created = results.iter().filter(|(status, _)| *status == 201).count();
    let mut delays: Vec<Duration> = results.iter().map(|(_, d)| *d).collect();
    delays.sort();
    let at = |p: usize| delays[(delays.len() * p / 100).min(delays.len() - 1)];
    println!(
        "{CLIENTS} clients x {EACH} mints: {created} x 201 in {took:?}; \
         201 -> first 200 at Envoy: p50 {:?}, p99 {:?}, max {:?}",
        at(50),
        at(99),
        delays[delays.len() - 1]
    );
    let statuses: Vec<u16> = results.iter().map(|(s, _)| *s).collect();
    assert_eq!(created, CLIENTS * EACH, "statuses: {statuses:?}");
    assert!(
        delays.iter().all(|d| *d <= ACCEPTED_WITHIN),
        "a key took longer than {ACCEPTED_WITHIN:?} to work: max {:?}",
        delays[delays.len() - 1]
    );
}
