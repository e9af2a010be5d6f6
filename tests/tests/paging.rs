//! A key table bigger than one snapshot page (here the control plane sends
//! two keys a page) reaches a fresh Envoy whole, through the real filter and
//! control plane, and keeps following changes (docs/feed-protocol.md).

use keygate_e2e::{Adapter, Stack, StackOptions, STEADY};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

const PATH: &str = "/api/v1/memory";
const LIMIT: Duration = Duration::from_secs(30);

/// Status of `GET PATH` with `key` on the Envoy listening on `port`.
async fn status(stack: &Stack, port: u16, key: &str) -> u16 {
    let url = format!("http://127.0.0.1:{port}{PATH}");
    match stack.client.get(url).bearer_auth(key).send().await {
        Ok(response) => response.status().as_u16(),
        Err(e) => panic!("Envoy on {port}: {e}"),
    }
}

/// Waits until `key` gets `want` [`STEADY`] times in a row (fresh
/// connections, so every worker) from the Envoy on `port`.
async fn wait_steady(stack: &Stack, port: u16, key: &str, want: u16) {
    let start = Instant::now();
    let mut streak = 0;
    while streak < STEADY {
        if status(stack, port, key).await == want {
            streak += 1;
        } else {
            streak = 0;
            assert!(start.elapsed() < LIMIT, "Envoy on {port} never gave {want}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn a_table_of_many_pages_loads_whole_and_keeps_following() {
    let options = StackOptions {
        control_plane_args: vec!["--feed-page-keys".into(), "2".into()],
        ..Default::default()
    };
    let mut stack = Stack::start_with(options).await;
    let admin = stack.tenant().api_key.clone();
    let mut created = Vec::new();
    for i in 0..6 {
        let body = json!({"name": format!("paged {i}"), "scopes": ["memory:read"]});
        created.push(stack.create_key(&admin, body).await);
    }

    // A new Envoy's first table: 7 keys, 4 pages.
    let second = stack.start_another_envoy().await;
    for reply in &created {
        wait_steady(&stack, second.envoy, reply.str("api_key"), 200).await;
    }
    wait_steady(&stack, second.envoy, &admin, 200).await;
    let stats_url = format!(
        "http://127.0.0.1:{}/stats?filter=keygate_(table_keys|fetches)$",
        second.admin
    );
    let stats = stack
        .client
        .get(stats_url)
        .send()
        .await
        .expect("admin /stats")
        .text()
        .await
        .unwrap_or_default();
    println!("second Envoy after a paged snapshot:\n{stats}");
    let adapter = Adapter::current();
    let table_keys = format!("{}: 7\n", adapter.stat("keygate_table_keys"));
    assert!(stats.contains(&table_keys), "{stats}");
    let fetches_prefix = format!("{}: ", adapter.stat("keygate_fetches"));
    let fetches: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix(fetches_prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(fetches >= 4, "7 keys at 2 a page take 4 answers: {stats}");

    // Both Envoys follow a revocation after the paged start.
    let doomed = created.first().expect("keys were created");
    let path = format!("/api/v1/api-keys/{}", doomed.str("id"));
    stack
        .call(Method::DELETE, &path, &admin, json!({}))
        .await
        .expect(200);
    wait_steady(&stack, second.envoy, doomed.str("api_key"), 401).await;
    stack
        .wait_steady(PATH, doomed.str("api_key"), 401, LIMIT)
        .await;
    for reply in created.iter().skip(1) {
        assert_eq!(
            status(&stack, second.envoy, reply.str("api_key")).await,
            200
        );
    }
}
