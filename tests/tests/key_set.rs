//! Feed versions belong to one key set (SPEC §14): swapping the control
//! plane's database under a running Envoy never mixes two histories.
//!
//! Database A gets a few hundred versions; the control plane restarts on an
//! empty database B (Envoy takes B's table) where a tenant is created, then
//! restarts on A again. Without key-set identity the filter, at B's version
//! 2, took A's delta from version 2: B's key kept working and A's first key
//! stayed refused.

use keygate_e2e::Stack;
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

const PATH: &str = "/api/v1/memory";
/// Keys minted in A (one version each).
const KEYS_IN_A: usize = 200;
/// Mints in flight at once.
const PARALLEL: usize = 8;
/// Longest time a swap may take to show at every worker.
const SWAP_LIMIT: Duration = Duration::from_secs(10);

/// Mints `n` keys with `admin`, `PARALLEL` at a time; returns them.
async fn mint(stack: &Stack, admin: &str, n: usize) -> Vec<String> {
    let mut keys = Vec::with_capacity(n);
    for batch in (0..n).collect::<Vec<_>>().chunks(PARALLEL) {
        let calls = batch.iter().map(|i| {
            let body = json!({"name": format!("a {i}"), "scopes": ["memory:read"]});
            stack.call(Method::POST, "/api/v1/api-keys", admin, body)
        });
        for reply in futures_util::future::join_all(calls).await {
            keys.push(reply.expect(201).str("api_key").to_string());
        }
    }
    keys
}

#[tokio::test]
async fn a_swapped_database_never_mixes_key_sets() {
    let mut stack = Stack::start().await;
    let a_first = stack.tenant().api_key.clone();
    let start = Instant::now();
    let a_keys = mint(&stack, &a_first, KEYS_IN_A).await;
    let a_last = a_keys.last().unwrap().clone();
    stack.wait_key_works(&a_last).await;
    println!(
        "database A: {} keys minted and served in {:?}",
        KEYS_IN_A + 1,
        start.elapsed()
    );

    stack.restart_control_plane_on("b.db").await;
    let b = stack.new_tenant("only in B").await;
    let (_, took) = stack.wait_steady(PATH, &a_first, 401, SWAP_LIMIT).await;
    println!("database B: its tenant's key works; A's key refused after {took:?}");

    stack.restart_control_plane_on("keygate.db").await;
    let (_, b_gone) = stack.wait_steady(PATH, &b.api_key, 401, SWAP_LIMIT).await;
    let (_, a_back) = stack.wait_steady(PATH, &a_first, 200, SWAP_LIMIT).await;
    stack.wait_steady(PATH, &a_last, 200, SWAP_LIMIT).await;
    println!(
        "back on A: B's key refused after {b_gone:?}, A's first key accepted after {a_back:?} on every worker"
    );
    let refused = stack.get(PATH, &b.api_key).await;
    refused.expect_error(401, "unauthorized", "Invalid API key");
    let log = stack.envoy_log();
    assert!(!log.contains("panicked"), "the filter panicked:\n{log}");
}
