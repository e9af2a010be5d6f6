//! Acknowledged means usable (SPEC §16): a key the control plane's answer
//! hands out (created, rotated) or widens (a scope added by `PATCH`) works
//! on every worker of Envoy the moment that answer arrives, with no retry;
//! and a key created with a name alone holds the tenant's default key
//! scopes (every default scope but `tenant:admin`).
//!
//! Management calls go straight to the control plane (the answer is the
//! same through Envoy, without its per-key rate limit on bulk minting);
//! every use goes through Envoy on a fresh connection, so Envoy spreads
//! them over its workers.

use keygate_e2e::{unthrottled_plans, Reply, Stack, StackOptions};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Keys created, across [`TENANTS`] tenants at once.
const KEYS: usize = 100;
const TENANTS: usize = 4;
/// Fresh connections each new or widened key is used on at once.
const USES: usize = 4;
/// Of each tenant's keys, how many are then rotated, and how many widened.
const ROTATED: usize = 5;
const WIDENED: usize = 5;
const PATH: &str = "/api/v1/memory";
/// Every default scope but `tenant:admin` (SPEC §5, §16).
const DEFAULT_SCOPES: [&str; 7] = [
    "memory:read",
    "memory:write",
    "users:read",
    "users:write",
    "conversations:read",
    "conversations:write",
    "tenant:read",
];

/// A management call straight to the control plane, as `admin`.
async fn manage(stack: &Stack, method: Method, path: &str, admin: &str, body: Value) -> Reply {
    let url = format!("http://127.0.0.1:{}{path}", stack.ports.control_plane);
    let request = stack.client.request(method, url).bearer_auth(admin);
    stack.send(request.json(&body)).await
}

/// Sends `method PATH` with `key` on [`USES`] fresh connections at once;
/// one line per answer that is not 200.
async fn use_at_once(stack: &Stack, method: Method, key: &str, what: &str) -> Vec<String> {
    let uses = (0..USES).map(|_| stack.send(stack.request(method.clone(), PATH).bearer_auth(key)));
    let replies = futures_util::future::join_all(uses).await;
    replies
        .iter()
        .filter(|r| r.status != 200)
        .map(|r| format!("{what}: {} {}", r.status, r.text))
        .collect()
}

/// The answer to a change reached every Envoy connected to the feed.
fn delivered(reply: &Reply) {
    assert_eq!(
        reply.json["propagated"],
        json!({"envoys": 1, "reached": 1}),
        "{reply:#?}"
    );
}

/// What one tenant's run found: refusals, and the creation latencies.
#[derive(Default)]
struct Run {
    refusals: Vec<String>,
    created_in: Vec<Duration>,
}

/// Creates `KEYS / TENANTS` keys for `admin` (every other one with a name
/// alone), using each at once; then rotates some and widens others, using
/// each new key or scope at once.
async fn run(stack: &Stack, admin: String, tenant: usize) -> Run {
    let mut out = Run::default();
    let mut narrow = Vec::new();
    let mut plain = Vec::new();
    for i in 0..KEYS / TENANTS {
        let name = format!("fresh {tenant}.{i}");
        let body = match i % 2 {
            0 => json!({"name": name}),
            _ => json!({"name": name, "scopes": ["memory:read"]}),
        };
        let started = Instant::now();
        let created = manage(stack, Method::POST, "/api/v1/api-keys", &admin, body).await;
        out.created_in.push(started.elapsed());
        created.expect(201);
        let key = created.str("api_key").to_string();
        out.refusals
            .extend(use_at_once(stack, Method::GET, &key, &format!("created {name}")).await);
        delivered(&created);
        let id = created.str("id").to_string();
        match i % 2 {
            0 => plain.push(id),
            _ => narrow.push((id, key)),
        }
    }
    for id in plain.iter().take(ROTATED) {
        let path = format!("/api/v1/api-keys/{id}/rotate");
        let rotated = manage(
            stack,
            Method::POST,
            &path,
            &admin,
            json!({"grace_seconds": 60}),
        )
        .await;
        rotated.expect(201);
        let what = format!("rotated {id}");
        out.refusals
            .extend(use_at_once(stack, Method::GET, rotated.str("api_key"), &what).await);
        delivered(&rotated);
    }
    for (id, key) in narrow.iter().take(WIDENED) {
        stack
            .send(stack.request(Method::POST, PATH).bearer_auth(key))
            .await
            .expect(403);
        let scopes = json!({"scopes": ["memory:read", "memory:write"]});
        let path = format!("/api/v1/api-keys/{id}");
        manage(stack, Method::PATCH, &path, &admin, scopes)
            .await
            .expect(200);
        let what = format!("widened {id}");
        out.refusals
            .extend(use_at_once(stack, Method::POST, key, &what).await);
    }
    out
}

/// The creation latency at quantile `q` (0 to 1).
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test]
async fn keys_work_everywhere_when_their_answer_arrives_and_a_name_is_enough() {
    let stack = Stack::start_with(StackOptions {
        control_plane_args: unthrottled_plans(),
        ..StackOptions::default()
    })
    .await;
    let mut admins = vec![stack.tenant().api_key.clone()];
    for _ in 1..TENANTS {
        admins.push(stack.new_tenant("fresh keys").await.api_key);
    }

    // A name alone: the default key scopes, and a working key.
    let admin = &admins[0];
    let named = stack
        .call(
            Method::POST,
            "/api/v1/api-keys",
            admin,
            json!({"name": "x"}),
        )
        .await;
    named.expect(201);
    assert_eq!(named.json["scopes"], json!(DEFAULT_SCOPES), "{named:#?}");
    let key = named.str("api_key");
    stack.get("/api/v1/api-keys", key).await.expect(200);
    stack
        .call(Method::POST, "/api/v1/api-keys", key, json!({"name": "y"}))
        .await
        .expect(403);
    let empty = json!({"name": "x", "scopes": []});
    let refused = stack
        .call(Method::POST, "/api/v1/api-keys", admin, empty)
        .await;
    refused.expect(400);
    assert_eq!(refused.json["error"]["field"], "scopes", "{refused:#?}");

    let started = Instant::now();
    let runs = admins
        .iter()
        .enumerate()
        .map(|(tenant, admin)| run(&stack, admin.clone(), tenant));
    let runs = futures_util::future::join_all(runs).await;
    let took = started.elapsed();
    let refusals: Vec<&String> = runs.iter().flat_map(|r| &r.refusals).collect();
    let mut created: Vec<Duration> = runs.iter().flat_map(|r| r.created_in.clone()).collect();
    created.sort();
    println!(
        "{KEYS} keys created ({} rotated, {} widened), each used {USES} times at once, in {took:?}: \
         {} refusals; creation answered in p50 {:?}, p99 {:?}",
        ROTATED * TENANTS,
        WIDENED * TENANTS,
        refusals.len(),
        quantile(&created, 0.5),
        quantile(&created, 0.99)
    );
    assert!(refusals.is_empty(), "refused at once: {refusals:#?}");
}
