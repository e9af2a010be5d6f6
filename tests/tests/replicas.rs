//! Control-plane replicas on one PostgreSQL database (SPEC §14), with two
//! real Envoys whose feed cluster lists both replicas: replica A first for
//! Envoy 1, replica B first for Envoy 2 (priorities, active health checks
//! on `/healthz`). A revocation through A reaches the Envoy polling B within
//! the bound (p50/p99 printed); A killed with SIGKILL in the middle of a
//! burst of creations and revocations on both replicas: Envoy 1 resumes from
//! B within about `feed.retry_ms` by deltas (no new snapshot), the versions
//! each replica serves never step back, and every acknowledged change holds
//! at both Envoys.

use keygate_e2e::pg::Postgres;
use keygate_e2e::{free_port, unthrottled_plans, Adapter, Stack, StackOptions, REVOCATION_BOUND};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const READY: &str = "/keygate/ready";
/// The feed cluster's endpoints start after this line of envoy/envoy.yaml.
const ENDPOINTS: &str =
    "    load_assignment:\n      cluster_name: keygate_control_plane\n      endpoints:\n";
/// Revocations measured across replicas.
const REVOCATIONS: usize = 20;
/// Writers per replica during the burst.
const WRITERS: usize = 2;
/// The burst before and after the kill.
const BEFORE_KILL: Duration = Duration::from_millis(500);
const AFTER_KILL: Duration = Duration::from_millis(500);
/// `feed.retry_ms` of the shipped envoy/envoy.yaml.
const RETRY: Duration = Duration::from_millis(1000);
/// How long a check may wait for a change to be effective.
const EFFECTIVE: Duration = Duration::from_secs(10);

fn endpoint(port: u16) -> String {
    format!("socket_address: {{ address: 127.0.0.1, port_value: {port} }}")
}

/// The feed cluster with active health checks and `standby` as the
/// priority-1 endpoint: used only while the priority-0 one is unhealthy.
fn with_standby(standby: u16) -> String {
    format!(
        "    health_checks:\n    - timeout: 1s\n      interval: 0.25s\n      \
         no_traffic_interval: 0.25s\n      unhealthy_threshold: 2\n      healthy_threshold: 1\n      \
         http_health_check: {{ path: /healthz }}\n{ENDPOINTS}      - priority: 1\n        \
         lb_endpoints:\n        - endpoint: {{ address: {{ {} }} }}\n",
        endpoint(standby)
    )
}

/// A key minted straight on a replica (not through Envoy's rate limit).
#[derive(Debug, Clone)]
struct Minted {
    id: String,
    key: String,
}

fn base(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// Mints a key on the replica at `port`; `None` if it is unreachable.
async fn mint(client: &reqwest::Client, port: u16, admin: &str, name: &str) -> Option<Minted> {
    let body = json!({"name": name, "scopes": ["memory:read"]});
    let url = format!("{}/api/v1/api-keys", base(port));
    let response = client.post(url).bearer_auth(admin).json(&body).send();
    let response = response.await.ok()?;
    assert_eq!(response.status(), 201);
    let v: Value = response.json().await.ok()?;
    Some(Minted {
        id: v["id"].as_str()?.to_string(),
        key: v["api_key"].as_str()?.to_string(),
    })
}

/// Revokes on the replica at `port`; the answer's `propagated`, or `None`
/// if the replica did not answer 200.
async fn revoke(client: &reqwest::Client, port: u16, admin: &str, id: &str) -> Option<Value> {
    let url = format!("{}/api/v1/api-keys/{id}", base(port));
    let response = client.delete(url).bearer_auth(admin).send().await.ok()?;
    if response.status() != 200 {
        return None;
    }
    let v: Value = response.json().await.ok()?;
    Some(v["propagated"].clone())
}

/// The feed version the replica at `port` serves (`None`: unreachable).
async fn served_version(client: &reqwest::Client, port: u16) -> Option<u64> {
    let url = format!("{}/metrics", base(port));
    let text = client.get(url).send().await.ok()?.text().await.ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("keygate_feed_version "))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits until `key` gets `status` steadily at every Envoy of `envoys`.
async fn effective_at(stack: &Stack, envoys: [u16; 2], key: &str, status: u16) {
    for envoy in envoys {
        stack
            .wait_steady_on(envoy, READY, key, status, EFFECTIVE)
            .await;
    }
}

/// The feed cluster's hosts as the Envoy whose admin is on `admin` sees
/// them (health flags, requests, failed connections), for failure messages.
async fn health(client: &reqwest::Client, admin: u16) -> String {
    let url = format!("http://127.0.0.1:{admin}/clusters");
    let text = match client.get(url).send().await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(e) => return e.to_string(),
    };
    text.lines()
        .filter(|l| l.starts_with("keygate_control_plane::127."))
        .filter(|l| {
            ["health_flags", "rq_total", "cx_connect_fail"]
                .iter()
                .any(|k| l.contains(k))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let i = (sorted.len() * p / 100).min(sorted.len() - 1);
    sorted[i]
}

/// What the burst's writers had acknowledged.
#[derive(Debug, Default)]
struct Acknowledged {
    /// Created (201), not revoked.
    live: Vec<Minted>,
    /// Revoked (200).
    revoked: Vec<Minted>,
    /// Created, then a revocation was sent that got no answer.
    unknown: usize,
}

/// Creates and revokes keys on the replica at `port` (every second key
/// created is revoked) until `stop` or the replica stops answering.
async fn writer(
    client: reqwest::Client,
    port: u16,
    admin: String,
    name: String,
    stop: Arc<AtomicBool>,
) -> Acknowledged {
    let mut acked = Acknowledged::default();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let Some(minted) = mint(&client, port, &admin, &format!("{name}-{i}")).await else {
            break;
        };
        i += 1;
        if i % 2 == 1 {
            acked.live.push(minted);
            continue;
        }
        match revoke(&client, port, &admin, &minted.id).await {
            Some(_) => acked.revoked.push(minted),
            None => {
                acked.unknown += 1;
                break;
            }
        }
    }
    acked
}

/// Samples the version each replica serves until `stop`.
async fn sample_versions(
    client: reqwest::Client,
    ports: [u16; 2],
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<[Vec<u64>; 2]>>,
) {
    while !stop.load(Ordering::Relaxed) {
        for (n, port) in ports.into_iter().enumerate() {
            if let Some(v) = served_version(&client, port).await {
                samples.lock().unwrap()[n].push(v);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn two_replicas_two_envoys_revoke_across_and_survive_a_kill() {
    let pg = Postgres::start();
    let b = free_port();
    // Writers mint and revoke at full speed: no management-rate limit.
    let options = StackOptions {
        database: Some(pg.url.clone()),
        control_plane_args: unthrottled_plans(),
        ..StackOptions::default()
    }
    .replace(ENDPOINTS, &with_standby(b));
    let mut stack = Stack::start_with(options).await;
    let a = stack.ports.control_plane;
    stack.start_replica(b).await;
    let envoy2 = stack
        .start_another_envoy_with(vec![
            (endpoint(a), endpoint(b)),
            (ENDPOINTS.to_string(), with_standby(a)),
        ])
        .await;
    let envoy1 = stack.ports;
    let client = stack.client.clone();
    let admin = stack.tenant().api_key.clone();
    let both = [envoy1.envoy, envoy2.envoy];

    // Each Envoy polls its first replica: A counts Envoy 1, B counts Envoy 2
    // (at start-up an Envoy may also have asked the other replica before its
    // health checks ran, and is counted there for a while: that is allowed).
    let start = Instant::now();
    loop {
        let on_a = stack
            .control_plane_metric_on(a, "keygate_feed_envoys")
            .await;
        let on_b = stack
            .control_plane_metric_on(b, "keygate_feed_envoys")
            .await;
        if on_a >= 1 && on_b >= 1 {
            break;
        }
        if start.elapsed() > EFFECTIVE * 3 {
            panic!(
                "Envoys connected: {on_a} on A, {on_b} on B; Envoy 1 sees {}; Envoy 2 sees {}",
                health(&client, envoy1.admin).await,
                health(&client, envoy2.admin).await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Revocations through A, while Envoy 2 polls B.
    let mut across = Vec::new();
    let mut counted = Vec::new();
    for i in 0..REVOCATIONS {
        let minted = mint(&client, a, &admin, &format!("across-{i}"))
            .await
            .unwrap();
        effective_at(&stack, both, &minted.key, 200).await;
        let at_envoy2 = async {
            stack
                .wait_steady_on(envoy2.envoy, READY, &minted.key, 401, EFFECTIVE)
                .await
                .1
        };
        let at_envoy1 = async {
            stack
                .wait_steady_on(envoy1.envoy, READY, &minted.key, 401, EFFECTIVE)
                .await
                .1
        };
        let (propagated, took2, took1) =
            tokio::join!(revoke(&client, a, &admin, &minted.id), at_envoy2, at_envoy1);
        let propagated = propagated.unwrap();
        // A counts the Envoys on its own feed: Envoy 1 (and Envoy 2 only
        // if its health checks failed B over to A meanwhile).
        assert!(propagated["envoys"].as_u64() >= Some(1), "{propagated}");
        counted.push(propagated["envoys"].as_u64().unwrap_or(0));
        across.push((took2, took1));
    }
    let mut via_b: Vec<Duration> = across.iter().map(|(t, _)| *t).collect();
    let mut via_a: Vec<Duration> = across.iter().map(|(_, t)| *t).collect();
    via_b.sort();
    via_a.sort();
    let (p50, p99) = (percentile(&via_b, 50), percentile(&via_b, 99));
    println!(
        "revoked on A, refused at the Envoy polling B: p50 {p50:?}, p99 {p99:?} \
         (Envoy polling A: p50 {:?}, p99 {:?}; {REVOCATIONS} revocations)",
        percentile(&via_a, 50),
        percentile(&via_a, 99)
    );
    println!(
        "Envoys counted by A's DELETE answers: {counted:?}; Envoy 1 sees {}; Envoy 2 sees {}",
        health(&client, envoy1.admin).await,
        health(&client, envoy2.admin).await
    );
    assert!(p99 < REVOCATION_BOUND, "p99 {p99:?}");

    // A burst of creations and revocations on both replicas; A is killed.
    let probe = mint(&client, b, &admin, "probe").await.unwrap();
    effective_at(&stack, both, &probe.key, 200).await;
    let snapshots_before = stack
        .control_plane_metric_on(b, "keygate_feed_requests_total{answer=\"snapshot\"}")
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new([Vec::new(), Vec::new()]));
    let sampler = tokio::spawn(sample_versions(
        client.clone(),
        [a, b],
        Arc::clone(&stop),
        Arc::clone(&samples),
    ));
    let mut writers = Vec::new();
    for (port, name) in [(a, "a"), (b, "b")] {
        for w in 0..WRITERS {
            writers.push(tokio::spawn(writer(
                client.clone(),
                port,
                admin.clone(),
                format!("burst-{name}{w}"),
                Arc::clone(&stop),
            )));
        }
    }
    tokio::time::sleep(BEFORE_KILL).await;
    stack.stop_control_plane();
    let killed = Instant::now();
    revoke(&client, b, &admin, &probe.id).await.unwrap();
    let (_, resumed) = stack
        .wait_steady_on(envoy1.envoy, READY, &probe.key, 401, EFFECTIVE)
        .await;
    let resumed = killed.elapsed().max(resumed);
    let left = AFTER_KILL.saturating_sub(killed.elapsed());
    tokio::time::sleep(left).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Acknowledged::default();
    for task in writers {
        let done = task.await.unwrap();
        acked.live.extend(done.live);
        acked.revoked.extend(done.revoked);
        acked.unknown += done.unknown;
    }
    sampler.await.unwrap();
    println!(
        "A killed during the burst: Envoy 1 took a revocation on B {resumed:?} after the kill \
         (feed.retry_ms {RETRY:?}); acknowledged {} creations and {} revocations \
         ({} revocations cut off by the kill)",
        acked.live.len() + acked.revoked.len(),
        acked.revoked.len(),
        acked.unknown
    );
    assert!(
        resumed < RETRY * 3,
        "Envoy 1 resumed from B after {resumed:?}"
    );

    // Versions never stepped back, and B serves at least what A served.
    let [from_a, from_b] = samples.lock().unwrap().clone();
    for (name, seen) in [("A", &from_a), ("B", &from_b)] {
        assert!(
            seen.windows(2).all(|w| w[0] <= w[1]),
            "replica {name} served a version below an earlier one: {seen:?}"
        );
    }
    let last = served_version(&client, b).await.unwrap();
    assert!(from_a.iter().all(|v| *v <= last), "B is behind A");
    println!(
        "versions served: A up to {:?} ({} samples), B up to {last} ({} samples)",
        from_a.last(),
        from_a.len(),
        from_b.len()
    );

    // Every acknowledged change holds at both Envoys.
    let check = Instant::now();
    for minted in &acked.live {
        effective_at(&stack, both, &minted.key, 200).await;
    }
    for minted in &acked.revoked {
        effective_at(&stack, both, &minted.key, 401).await;
    }
    println!(
        "every acknowledged change effective at both Envoys (checked in {:?})",
        check.elapsed()
    );
    for admin_port in [envoy1.admin, envoy2.admin] {
        let gauge = stack
            .stat_on(
                admin_port,
                &Adapter::current().stat("keygate_table_version"),
            )
            .await;
        assert_eq!(gauge, Some(last), "the Envoy holds B's version");
    }
    // Envoy 1 went on from A's history on B, by deltas: no new snapshot.
    let snapshots_after = stack
        .control_plane_metric_on(b, "keygate_feed_requests_total{answer=\"snapshot\"}")
        .await;
    assert_eq!(
        snapshots_after, snapshots_before,
        "a snapshot after failover"
    );
    drop(stack);
    drop(pg);
}
