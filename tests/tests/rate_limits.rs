//! Per-key rate limits by Envoy's local_ratelimit (SPEC §8).

use keygate_e2e::{Reply, Stack};
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

/// Mints a key without the harness's readiness polling (which would spend
/// its tokens); returns the key.
async fn mint(stack: &Stack, tier: &str) -> String {
    let admin = &stack.tenant().api_key;
    let body = json!({"name": tier, "scopes": ["memory:read"], "rate_limit_tier": tier});
    let reply = stack
        .call(Method::POST, "/api/v1/api-keys", admin, body)
        .await;
    reply.expect(201);
    reply.str("api_key").to_string()
}

/// Calls with `key` until the first 429 (at most `limit` 200s); returns
/// how many 200s came before it, and the 429. A 401 (a worker that has not
/// seen the new key yet) spends no token, since the filter answers before
/// the rate limit, and is not counted as a call.
async fn burst(stack: &Stack, key: &str, limit: usize) -> (usize, Option<Reply>) {
    let mut allowed = 0;
    let started = std::time::Instant::now();
    while allowed < limit {
        let reply = stack.get("/api/v1/memory", key).await;
        match reply.status {
            200 => {
                assert!(reply.header("x-ratelimit-limit").is_some(), "{reply:#?}");
                assert!(
                    reply.header("x-ratelimit-remaining").is_some(),
                    "{reply:#?}"
                );
                allowed += 1;
            }
            429 => return (allowed, Some(reply)),
            // Right after minting, a worker may not have the key yet.
            401 if started.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            _ => panic!("unexpected reply in a burst: {reply:#?}"),
        }
    }
    (allowed, None)
}

#[tokio::test]
async fn free_tier_is_60_per_minute_per_key() {
    let stack = Stack::start().await;
    // The harness's default plan (`pro`) allows only the pro tier.
    stack.set_plan(&stack.tenant().tenant_id, "free").await;
    let key = mint(&stack, "free").await;
    let other = mint(&stack, "free").await;

    let (allowed, refused) = burst(&stack, &key, 200).await;
    println!("free tier: {allowed} requests allowed in a burst, then 429");
    let refused = refused.expect("no 429 within 200 requests of a free key");
    refused.expect_error(429, "rate_limited", "Rate limit exceeded");
    assert_eq!(
        refused.header("x-ratelimit-limit"),
        Some("60"),
        "{refused:#?}"
    );
    assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
    // 60 per minute, refilled continuously: a burst may gain a token or two.
    assert!((60..=62).contains(&allowed), "{allowed} requests allowed");

    // Every key has its own bucket.
    let (other_allowed, _) = burst(&stack, &other, 5).await;
    assert_eq!(other_allowed, 5, "another free key was limited too");
}

#[tokio::test]
async fn pro_tier_is_600_per_minute() {
    let stack = Stack::start().await;
    let key = mint(&stack, "pro").await;
    let started = std::time::Instant::now();
    let (allowed, refused) = burst(&stack, &key, 700).await;
    let took = started.elapsed();
    println!("pro tier: {allowed} requests allowed in a burst of {took:?}, then 429");
    let refused = refused.expect("no 429 within 700 requests of a pro key");
    assert_eq!(
        refused.header("x-ratelimit-limit"),
        Some("600"),
        "{refused:#?}"
    );
    // 600 per minute, refilled continuously (10 a second) while the burst
    // runs: it may gain that many, and no more.
    let refilled = (took.as_secs_f64() * 10.0).ceil() as usize;
    assert!(
        (600..=602 + refilled).contains(&allowed),
        "{allowed} requests allowed in {took:?}"
    );
}
