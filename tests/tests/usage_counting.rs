//! Usage counting in the filter (SPEC §11), through the real Envoy to the
//! control plane's usage API: counts per outcome within one flush interval
//! (the harness's configs flush every second), `last_used_at`, the
//! upstream's cost summed and never shown to the client, Envoy's own rate
//! limit told apart, and a batch retried across a control-plane outage
//! counted exactly once.

use futures_util::future::join_all;
use keygate_e2e::{last_used_at, Reply, Stack, UsageTotals};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

/// Counts must show within one interval (1 s) plus the query's own time;
/// a loaded machine gets a margin, and the time is printed.
const WITHIN: Duration = Duration::from_secs(8);

/// Creates a key with `body` without the harness's readiness polling (its
/// requests would be counted too); returns (id, key).
async fn mint(stack: &Stack, admin: &str, body: serde_json::Value) -> (String, String) {
    let reply = stack
        .call(Method::POST, "/api/v1/api-keys", admin, body)
        .await;
    reply.expect(201);
    (
        reply.str("id").to_string(),
        reply.str("api_key").to_string(),
    )
}

/// Waits until `key` passes on `path` 10 times in a row (every worker has
/// it); returns how many requests were allowed on the way (they are
/// counted; the 401s of a worker without the key yet are not, per key).
async fn allowed_once_known(stack: &Stack, path: &str, key: &str) -> u64 {
    let start = Instant::now();
    let (mut allowed, mut in_a_row) = (0, 0);
    while in_a_row < 10 {
        let reply = stack.get(path, key).await;
        match reply.status {
            200 => (allowed, in_a_row) = (allowed + 1, in_a_row + 1),
            401 => in_a_row = 0,
            s => panic!("unexpected {s}: {}", reply.text),
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "key never worked"
        );
    }
    allowed
}

fn count(replies: &[Reply], status: u16) -> u64 {
    replies.iter().filter(|r| r.status == status).count() as u64
}

#[tokio::test]
async fn counts_per_outcome_cost_and_last_used_reach_the_usage_api() {
    let stack = Stack::start().await;
    let admin = stack.tenant().api_key.clone();
    let (id, key) = mint(
        &stack,
        &admin,
        json!({"name": "reader", "scopes": ["memory:read"]}),
    )
    .await;
    let warm = allowed_once_known(&stack, "/api/v1/memory", &key).await;
    assert_eq!(stack.key_usage(&admin, &id).await.get("missing_scope"), 0);

    for _ in 0..5 {
        stack.get("/api/v1/memory", &key).await.expect(200);
    }
    for _ in 0..3 {
        let reply = stack
            .call(Method::POST, "/api/v1/memory", &key, json!({}))
            .await;
        reply.expect(403);
    }
    for _ in 0..2 {
        let reply = stack.get("/v1/chat/completions", &key).await;
        reply.expect(200);
        assert_eq!(reply.json["object"], "chat.completion");
        assert!(
            reply.header("x-keygate-cost").is_none(),
            "the cost header reached the client"
        );
    }
    let malformed_before = stack
        .filter_stat("keygate_usage_cost_malformed")
        .await
        .unwrap_or(0);
    let clamped_before = stack
        .filter_stat("keygate_usage_cost_clamped")
        .await
        .unwrap_or(0);
    for odd in ["abc", "-5"] {
        let reply = stack
            .get(&format!("/v1/chat/completions?cost={odd}"), &key)
            .await;
        reply.expect(200);
        assert!(reply.header("x-keygate-cost").is_none());
    }
    let sent = Instant::now();
    let allowed = warm + 5 + 2 + 2;
    let (totals, took) = stack
        .wait_usage(&admin, &id, WITHIN, |t| {
            t.get("allowed") == allowed && t.get("missing_scope") == 3
        })
        .await;
    println!(
        "counts of {} requests in the usage API {:?} after the last one (flush 1 s): {totals:?}",
        allowed + 3,
        took
    );
    assert_eq!(
        totals.cost_micros,
        2 * 1500,
        "two costs of 1500, the odd ones not counted"
    );
    assert_eq!(totals.requests.len(), 2, "no other outcome: {totals:?}");
    assert!(sent.elapsed() < WITHIN);
    let malformed = stack
        .filter_stat("keygate_usage_cost_malformed")
        .await
        .unwrap_or(0);
    let clamped = stack
        .filter_stat("keygate_usage_cost_clamped")
        .await
        .unwrap_or(0);
    assert_eq!(
        (malformed - malformed_before, clamped - clamped_before),
        (1, 1)
    );

    let view = stack.get(&format!("/api/v1/api-keys/{id}"), &admin).await;
    view.expect(200);
    let used = last_used_at(&view.json)
        .expect("last_used_at set")
        .to_string();
    let now_minute = keygate_e2e::rfc3339(keygate_e2e::unix_now() / 60 * 60);
    let earlier_minute = keygate_e2e::rfc3339(keygate_e2e::unix_now() / 60 * 60 - 60);
    assert!(
        used == now_minute || used == earlier_minute,
        "last_used_at {used}, now {now_minute}"
    );
    println!("last_used_at {used}");
    let sent_batches = stack
        .filter_stat("keygate_usage_batches_sent")
        .await
        .unwrap_or(0);
    assert!(sent_batches > 0, "no batch acknowledged");
}

#[tokio::test]
async fn own_and_envoy_rate_limits_are_counted_apart() {
    let stack = Stack::start().await;
    let admin = stack.tenant().api_key.clone();
    let (own_id, own) = mint(
        &stack,
        &admin,
        json!({"name": "limited", "scopes": ["memory:read"], "rate_limits": {"per_minute": 50}}),
    )
    .await;
    let (envoy_id, plain) = mint(
        &stack,
        &admin,
        json!({"name": "plain", "scopes": ["memory:read"]}),
    )
    .await;
    let warm_own = allowed_once_known(&stack, "/anything", &own).await;
    let warm_plain = allowed_once_known(&stack, "/anything", &plain).await;

    let own_replies = join_all((0..60).map(|_| stack.get("/anything", &own))).await;
    // Tier pro: 600 a minute per key in Envoy's local_ratelimit.
    let started = Instant::now();
    let mut plain_replies = Vec::new();
    for _ in 0..17 {
        plain_replies.extend(join_all((0..40).map(|_| stack.get("/anything", &plain))).await);
    }
    println!("680 requests of one key in {:?}", started.elapsed());
    let (own_ok, own_limited) = (count(&own_replies, 200), count(&own_replies, 429));
    let (plain_ok, plain_limited) = (count(&plain_replies, 200), count(&plain_replies, 429));
    assert_eq!(own_ok + own_limited, 60);
    assert_eq!(plain_ok + plain_limited, 680);
    assert!(
        own_limited > 0 && plain_limited > 0,
        "{own_limited} {plain_limited}"
    );
    let envoys = plain_replies.iter().find(|r| r.status == 429).unwrap();
    envoys.expect_error(429, "rate_limited", "Rate limit exceeded");

    let (own_totals, took) = stack
        .wait_usage(&admin, &own_id, WITHIN, |t| {
            t.get("allowed") == warm_own + own_ok && t.get("rate_limited") == own_limited
        })
        .await;
    println!("own limit: {own_totals:?} after {took:?}");
    let (envoy_totals, took) = stack
        .wait_usage(&admin, &envoy_id, WITHIN, |t| {
            t.get("allowed") == warm_plain + plain_ok
                && t.get("rate_limited_envoy") == plain_limited
        })
        .await;
    println!("Envoy's limit: {envoy_totals:?} after {took:?}");
    assert_eq!(own_totals.get("rate_limited_envoy"), 0);
    assert_eq!(envoy_totals.get("rate_limited"), 0);
}

#[tokio::test]
async fn a_batch_retried_across_an_outage_is_counted_once() {
    let mut stack = Stack::start().await;
    let admin = stack.tenant().api_key.clone();
    let (id, key) = mint(
        &stack,
        &admin,
        json!({"name": "outage", "scopes": ["memory:read"]}),
    )
    .await;
    let warm = allowed_once_known(&stack, "/anything", &key).await;
    stack
        .wait_usage(&admin, &id, WITHIN, |t| t.get("allowed") == warm)
        .await;
    let failed_before = stack
        .filter_stat("keygate_usage_batches_failed")
        .await
        .unwrap_or(0);

    stack.stop_control_plane();
    for _ in 0..7 {
        stack.get("/anything", &key).await.expect(200);
    }
    // Several flush intervals: the batch fails and waits.
    let until = Instant::now() + Duration::from_millis(3500);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let failed = stack
        .filter_stat("keygate_usage_batches_failed")
        .await
        .unwrap_or(0);
    println!(
        "{} failed sends while the control plane was down",
        failed - failed_before
    );
    assert!(failed > failed_before, "no send failed during the outage");

    let restarted = Instant::now();
    stack.start_control_plane().await;
    let expected = warm + 7;
    let (_, took) = stack
        .wait_usage(&admin, &id, WITHIN, |t: &UsageTotals| {
            t.get("allowed") >= expected
        })
        .await;
    println!(
        "counts of the outage arrived {:?} after the restart ({took:?} of polling)",
        restarted.elapsed()
    );
    // More intervals: a second delivery would show now.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let totals = stack.key_usage(&admin, &id).await;
    assert_eq!(
        totals.get("allowed"),
        expected,
        "counted exactly once: {totals:?}"
    );
}
