//! What a key carries to every Envoy (SPEC §3, §4, §10): its own rate
//! limits, held for that key across both workers of one Envoy; its owner,
//! forwarded as `x-key-owner`; its tenant's suspension by the operator.
//! Under either adapter (`KEYGATE_ADAPTER=wasm|native`), `--concurrency 2`.

use futures_util::future::join_all;
use keygate_e2e::{admin_command, Reply, Stack, StackOptions, REVOCATION_BOUND};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The per-minute limit the test key gets (at most what a plan allows).
const PER_MINUTE: usize = 20;

async fn two_workers() -> Stack {
    Stack::start_with(StackOptions {
        concurrency: 2,
        ..StackOptions::default()
    })
    .await
}

/// Mints a key of the default tier with `extra` fields, without polling
/// with it (which would spend its limit); returns the key.
async fn mint(stack: &Stack, admin: &str, extra: Value) -> String {
    let mut body = json!({"name": "k", "scopes": ["memory:read"]});
    for (name, value) in extra.as_object().unwrap() {
        body[name] = value.clone();
    }
    let reply = stack
        .call(Method::POST, "/api/v1/api-keys", admin, body)
        .await;
    reply.expect(201);
    reply.str("api_key").to_string()
}

/// `n` requests with `key` at once, each on its own connection (so both
/// workers take some); their replies.
async fn at_once(stack: &Stack, key: &str, n: usize) -> Vec<Reply> {
    join_all((0..n).map(|_| stack.get("/api/v1/memory", key))).await
}

fn count(replies: &[Reply], status: u16) -> usize {
    replies.iter().filter(|r| r.status == status).count()
}

#[tokio::test]
async fn a_keys_own_limit_holds_across_workers_and_the_owner_reaches_upstream() {
    let stack = two_workers().await;
    let admin = stack.tenant().api_key.clone();
    let limited = mint(
        &stack,
        &admin,
        json!({"rate_limits": {"per_minute": PER_MINUTE}, "external_id": "user-42"}),
    )
    .await;
    let plain = mint(&stack, &admin, json!({})).await;
    // Minted after the others: once it works on both workers, they are there.
    let owned = mint(&stack, &admin, json!({"external_id": "device-7"})).await;
    stack.wait_key_works(&owned).await;

    let started = Instant::now();
    let replies = at_once(&stack, &limited, 3 * PER_MINUTE).await;
    let (allowed, limited_count) = (count(&replies, 200), count(&replies, 429));
    println!(
        "per_minute {PER_MINUTE}: {allowed} of {} requests allowed, {limited_count} got 429 ({:?}, 2 workers)",
        3 * PER_MINUTE,
        started.elapsed()
    );
    assert_eq!(allowed, PER_MINUTE, "exactly the key's limit passes");
    assert_eq!(limited_count, 2 * PER_MINUTE, "the rest is refused");
    let refused = replies.iter().find(|r| r.status == 429).unwrap();
    refused.expect_error(429, "rate_limited", "Rate limit exceeded");
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "retry-after {retry}");
    assert_eq!(
        refused.header("x-ratelimit-limit"),
        Some(PER_MINUTE.to_string().as_str())
    );
    assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(
        refused.header("x-ratelimit-reset"),
        Some(retry.to_string().as_str())
    );
    let through = replies.iter().find(|r| r.status == 200).unwrap();
    assert_eq!(through.echoed_header("x-key-owner"), Some("user-42"));

    // A key without limits of its own: only its tier's (600/minute).
    let replies = at_once(&stack, &plain, 3 * PER_MINUTE).await;
    println!(
        "no own limits: {} of {} allowed",
        count(&replies, 200),
        3 * PER_MINUTE
    );
    assert_eq!(count(&replies, 200), 3 * PER_MINUTE);
    assert_eq!(through_owner(&replies), None, "no owner, no x-key-owner");

    // A client's own x-key-owner never reaches the upstream.
    let forged = |key: &str| {
        stack
            .request(Method::GET, "/api/v1/memory")
            .bearer_auth(key)
            .header("x-key-owner", "someone-else")
    };
    let reply = stack.send(forged(&owned)).await;
    reply.expect(200);
    assert_eq!(reply.echoed_header("x-key-owner"), Some("device-7"));
    let reply = stack.send(forged(&plain)).await;
    reply.expect(200);
    assert_eq!(reply.echoed_header("x-key-owner"), None);
}

fn through_owner(replies: &[Reply]) -> Option<String> {
    replies
        .iter()
        .find_map(|r| r.echoed_header("x-key-owner").map(str::to_string))
}

#[tokio::test]
async fn a_suspended_tenant_is_refused_at_envoy_and_comes_back_on_resume() {
    let stack = two_workers().await;
    let acme = stack.new_tenant("acme").await;
    let second = stack
        .create_key(
            &acme.api_key,
            json!({"name": "k", "scopes": ["memory:read"]}),
        )
        .await
        .str("api_key")
        .to_string();
    let other = stack.tenant().api_key.clone();

    let asked = Instant::now();
    let answer = admin_command(&stack, &["tenant", "suspend", &acme.tenant_id]);
    let cli = asked.elapsed();
    assert_eq!(answer["suspended"], true);
    assert_eq!(answer["keys_changed"], 2);
    let (refused, took) = stack
        .wait_steady("/api/v1/memory", &second, 403, Duration::from_secs(5))
        .await;
    println!(
        "suspension: 403 at Envoy (both workers) {took:?} after the CLI answered ({:?} after it was run)",
        cli + took
    );
    refused.expect_error(403, "forbidden", "Organization is suspended");
    assert!(took < REVOCATION_BOUND, "took {took:?}");
    stack
        .get("/api/v1/memory", &acme.api_key)
        .await
        .expect_error(403, "forbidden", "Organization is suspended");
    stack.get("/api/v1/memory", &other).await.expect(200);

    let asked = Instant::now();
    let answer = admin_command(&stack, &["tenant", "resume", &acme.tenant_id]);
    assert_eq!(answer["suspended"], false);
    let (_, took) = stack
        .wait_steady("/api/v1/memory", &second, 200, Duration::from_secs(5))
        .await;
    println!(
        "resume: 200 again {took:?} after the CLI answered ({:?} after it was run)",
        asked.elapsed()
    );
    assert!(took < REVOCATION_BOUND, "took {took:?}");
    stack.get("/api/v1/memory", &acme.api_key).await.expect(200);
    stack.get("/api/v1/memory", &other).await.expect(200);
}
