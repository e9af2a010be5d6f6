//! Caps and quotas through real Envoy (SPEC §11): usage reported to the
//! control plane as an Envoy's reporter sends it uses a key's quota or
//! spending cap up, and every worker answers 402 with the SPEC §4 body
//! within the revocation bound (the delay is printed); a raise or a reset
//! brings the key back the same way. And the overshoot test of issue 15:
//! a key with `quota: 100` driven at a steady rate, counted by the filter's
//! own usage reporting, refused once the reports reach the control plane;
//! and a spending cap used up by the cost the demo upstream reports.
//!
//! Keys are on the `pro` tier (600 requests a minute): the `free` tier's 60
//! would answer 429 to the polling before the quota does.

use keygate_e2e::{Reply, Stack, REVOCATION_BOUND};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const PATH: &str = "/api/v1/memory";
const QUOTA: &str = "API key has reached its request quota";
const SPEND: &str = "API key has reached its spending cap";
/// The harness's usage flush interval (the filter's `usage.flush_seconds`).
const FLUSH: Duration = Duration::from_secs(1);
/// How long a wasm worker holds its counts before handing them to the
/// reporter (once a second).
const HANDOFF: Duration = Duration::from_secs(1);

/// A `pro` key of the stack's tenant with `caps`: (id, key).
async fn capped_key(stack: &Stack, caps: Value) -> (String, String) {
    let mut body = json!({"name": "capped", "scopes": ["memory:read"], "rate_limit_tier": "pro"});
    for (name, value) in caps.as_object().unwrap() {
        body[name] = value.clone();
    }
    let created = stack.create_key(&stack.tenant().api_key, body).await;
    (
        created.str("id").to_string(),
        created.str("api_key").to_string(),
    )
}

/// Waits until every worker answers `status` to `key`; returns the first
/// such reply and the time from `since`.
async fn steady(stack: &Stack, key: &str, status: u16, since: Instant) -> (Reply, Duration) {
    let before = since.elapsed();
    let (reply, after) = stack
        .wait_steady(PATH, key, status, Duration::from_secs(10))
        .await;
    (reply, before + after)
}

async fn admin_call(stack: &Stack, method: Method, path: &str, body: Value) -> Reply {
    let reply = stack
        .call(method, path, &stack.tenant().api_key, body)
        .await;
    reply.expect(200);
    reply
}

#[tokio::test]
async fn a_used_up_quota_answers_402_until_raised_or_reset() {
    let stack = Stack::start().await;
    let (id, key) = capped_key(&stack, json!({"quota": {"requests": 50}})).await;
    stack.get(PATH, &key).await.expect(200);

    stack.report_usage(&id, 50, 0).await;
    let (refused, delay) = steady(&stack, &key, 402, Instant::now()).await;
    refused.expect_error(402, "quota_exceeded", QUOTA);
    println!("quota used up (ingest answered) to a steady 402 at Envoy: {delay:?}");
    assert!(delay < REVOCATION_BOUND, "402 took {delay:?}");

    let path = format!("/api/v1/api-keys/{id}");
    admin_call(
        &stack,
        Method::PATCH,
        &path,
        json!({"quota": {"requests": 60}}),
    )
    .await;
    let (_, back) = steady(&stack, &key, 200, Instant::now()).await;
    println!("quota raised (PATCH answered) to a steady 200: {back:?}");
    assert!(back < REVOCATION_BOUND, "the raise took {back:?}");

    stack.report_usage(&id, 10, 0).await;
    steady(&stack, &key, 402, Instant::now()).await;
    let reset = format!("/api/v1/api-keys/{id}/usage/reset");
    let answer = admin_call(&stack, Method::POST, &reset, json!({})).await;
    assert_eq!(answer.json["quota"]["used"], 0, "{answer:#?}");
    let (_, back) = steady(&stack, &key, 200, Instant::now()).await;
    println!("quota reset (POST answered) to a steady 200: {back:?}");
    assert!(back < REVOCATION_BOUND, "the reset took {back:?}");
}

#[tokio::test]
async fn a_used_up_spend_cap_answers_402_until_reset() {
    let stack = Stack::start().await;
    let (id, key) = capped_key(
        &stack,
        json!({"spend_cap": {"micros": 5000, "period": "month"}}),
    )
    .await;
    stack.report_usage(&id, 3, 4999).await;
    stack.get(PATH, &key).await.expect(200);
    stack.report_usage(&id, 1, 1).await;
    let (refused, delay) = steady(&stack, &key, 402, Instant::now()).await;
    refused.expect_error(402, "quota_exceeded", SPEND);
    println!("spending cap used up (ingest answered) to a steady 402 at Envoy: {delay:?}");
    assert!(delay < REVOCATION_BOUND, "402 took {delay:?}");

    let reset = format!("/api/v1/api-keys/{id}/usage/reset");
    let answer = admin_call(&stack, Method::POST, &reset, json!({})).await;
    assert_eq!(answer.json["spend_cap"]["used"], 0, "{answer:#?}");
    let (_, back) = steady(&stack, &key, 200, Instant::now()).await;
    println!("spending cap reset (POST answered) to a steady 200: {back:?}");
    assert!(back < REVOCATION_BOUND, "the reset took {back:?}");
}

/// Needs the filter's usage reporting (`usage.flush_seconds`, 1 s in the
/// harness): the only usage the control plane hears of here is what Envoy
/// counted and reported.
#[tokio::test]
async fn quota_of_100_at_a_steady_rate_overshoots_by_at_most_one_flush_and_the_revocation_bound() {
    const RATE: u64 = 20;
    let stack = Stack::start().await;
    let (id, key) = capped_key(&stack, json!({"quota": {"requests": 100}})).await;
    // What the readiness polls of `create_key` used, once reported.
    tokio::time::sleep(FLUSH * 2).await;
    let path = format!("/api/v1/api-keys/{id}");
    let view = admin_call(&stack, Method::GET, &path, json!({})).await;
    let left = 100 - view.json["quota"]["used"].as_u64().unwrap();

    let mut tick = tokio::time::interval(Duration::from_millis(1000 / RATE));
    let (mut allowed, mut refused_in_a_row) = (0u64, 0);
    let start = Instant::now();
    while refused_in_a_row < 20 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never refused: is the filter reporting usage?"
        );
        tick.tick().await;
        let reply = stack.get(PATH, &key).await;
        match reply.status {
            200 => (allowed, refused_in_a_row) = (allowed + 1, 0),
            402 => {
                reply.expect_error(402, "quota_exceeded", QUOTA);
                refused_in_a_row += 1;
            }
            _ => panic!("unexpected reply: {reply:#?}"),
        }
    }
    let overshoot = allowed.saturating_sub(left);
    let bound = RATE * (FLUSH + HANDOFF + REVOCATION_BOUND).as_secs();
    println!(
        "quota 100 at {RATE} requests/s: {allowed} allowed of {left} left, overshoot {overshoot} \
         (bound: {RATE}/s x (flush {FLUSH:?} + hand-off {HANDOFF:?} + revocation \
         {REVOCATION_BOUND:?}) = {bound})"
    );
    assert!(allowed >= left, "refused before the quota was used up");
    assert!(overshoot <= bound, "overshoot {overshoot} past {bound}");
}

/// A spending cap used up by real traffic: the demo upstream's chat route
/// reports 1500 micro-units a call, the filter sums and reports it, and the
/// key is refused once the reports reach the control plane; a reset
/// brings it back.
#[tokio::test]
async fn a_spending_cap_is_used_up_by_the_cost_the_upstream_reports() {
    const RATE: u64 = 10;
    const CHAT: &str = "/v1/chat/completions";
    let stack = Stack::start().await;
    let cap = 6 * 1500;
    let (id, key) = capped_key(&stack, json!({"spend_cap": {"micros": cap}})).await;
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / RATE));
    let (mut allowed, mut refused_in_a_row) = (0u64, 0);
    let start = Instant::now();
    while refused_in_a_row < 10 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never refused after {allowed} calls"
        );
        tick.tick().await;
        let reply = stack.get(CHAT, &key).await;
        match reply.status {
            200 => (allowed, refused_in_a_row) = (allowed + 1, 0),
            402 => {
                reply.expect_error(402, "quota_exceeded", SPEND);
                refused_in_a_row += 1;
            }
            _ => panic!("unexpected reply: {reply:#?}"),
        }
    }
    let bound = RATE * (FLUSH + HANDOFF + REVOCATION_BOUND).as_secs();
    let overshoot = allowed.saturating_sub(6);
    println!(
        "spending cap of 6 calls at {RATE} calls/s: {allowed} allowed, overshoot {overshoot} \
         (bound {bound})"
    );
    assert!(allowed >= 6, "refused before the cap was used up");
    assert!(overshoot <= bound, "overshoot {overshoot} past {bound}");
    // The calls allowed past the cap are still on their way: once they are
    // counted, a reset gives the key back (read on a route that costs
    // nothing, so the check does not spend the cap again).
    let path = format!("/api/v1/api-keys/{id}");
    let counted = Instant::now();
    loop {
        let view = admin_call(&stack, Method::GET, &path, json!({})).await;
        if view.json["spend_cap"]["used"].as_u64() == Some(allowed * 1500) {
            break;
        }
        assert!(
            counted.elapsed() < Duration::from_secs(10),
            "every allowed call's cost never counted: {view:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reset = format!("/api/v1/api-keys/{id}/usage/reset");
    admin_call(&stack, Method::POST, &reset, json!({})).await;
    let (back, _) = stack
        .wait_steady(PATH, &key, 200, Duration::from_secs(10))
        .await;
    back.expect(200);
}
