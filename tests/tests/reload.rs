//! Envoy reloading its configuration under load refuses nothing (SPEC §14):
//! listener updates by LDS with and without new VMs, filter updates by ECDS,
//! and a cold start. Every answer of the load is counted; after each reload
//! a revocation is timed; once the old configuration drained, the control
//! plane sees one feed stream per Envoy again.

use keygate_e2e::dynamic::{self, ecds_path, lds_path};
use keygate_e2e::load::{Counts, Load};
use keygate_e2e::{Adapter, Reply, Stack, StackOptions, REVOCATION_BOUND};
use reqwest::Method;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

const PATH: &str = "/api/v1/memory";
const CLIENTS: usize = 4;
const WAITING: &str = "keygate_feed_waiting";
const NOT_READY: &str = "Authentication is not ready";

/// The stack for these tests: Envoy's config from `transform`, a short
/// drain, and the per-key rate limit counted but not enforced (the load
/// sends far more than a tier allows).
fn options(transform: fn(String, &Path) -> String) -> StackOptions {
    let mut options = StackOptions::default().replace(
        "runtime_key: keygate.rate_limit.enforced\n                default_value: { numerator: 100",
        "runtime_key: keygate.rate_limit.enforced\n                default_value: { numerator: 0",
    );
    options.envoy_config = Some(transform);
    options.envoy_args = ["--drain-time-s", "1", "--drain-strategy", "immediate"]
        .map(String::from)
        .to_vec();
    options
}

/// The `n`-th version of a resource file: another filter configuration
/// (`retry_ms`), and with `new_vm` another `vm_id` (new VMs; the native
/// adapter has no VMs, so there every version is a new configuration only).
fn version(base: &str, n: usize, new_vm: bool) -> String {
    let text = base.replace("\"retry_ms\": 1000", &format!("\"retry_ms\": {}", 1001 + n));
    if new_vm && Adapter::current() == Adapter::Wasm {
        text.replace("vm_id: keygate\n", &format!("vm_id: keygate-{n}\n"))
    } else {
        text
    }
}

/// Sum of the Envoy counters whose name contains `part`.
async fn counter(stack: &Stack, part: &str) -> u64 {
    stack
        .stats(part)
        .await
        .lines()
        .filter_map(|l| l.split_once(": ")?.1.trim().parse::<u64>().ok())
        .sum()
}

/// Waits until the counter `part` passes `before` (the update was taken).
async fn wait_counter_above(stack: &Stack, part: &str, before: u64) -> Duration {
    let start = Instant::now();
    while counter(stack, part).await <= before {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "Envoy did not take the update ({part})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

/// Mints a key, revokes it and returns the time from the `DELETE` answer
/// to a steady run of 401s.
async fn time_a_revocation(stack: &Stack, n: usize) -> Duration {
    let admin = stack.tenant().api_key.clone();
    let created = stack
        .create_key(
            &admin,
            json!({"name": format!("reload {n}"), "scopes": ["memory:read"]}),
        )
        .await;
    let path = format!("/api/v1/api-keys/{}", created.str("id"));
    let reply = stack.call(Method::DELETE, &path, &admin, json!({})).await;
    let answered = Instant::now();
    reply.expect(200);
    let polling = answered.elapsed();
    let (_, after) = stack
        .wait_steady(PATH, created.str("api_key"), 401, Duration::from_secs(10))
        .await;
    polling + after
}

/// "first key table … loaded N ms after …" lines of the filter, in ms
/// (wasm: after its VM was configured; native: after the configuration).
fn first_table_times(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| {
            let rest = l.split(") loaded ").nth(1)?;
            rest.split(" ms after ").next()?.parse().ok()
        })
        .collect()
}

/// Waits until the control plane holds exactly `envoys` long-polls, seen
/// in 10 samples in a row; returns how long that took.
async fn wait_one_stream_each(stack: &Stack, envoys: u64) -> Duration {
    let start = Instant::now();
    let mut run = 0;
    let mut seen = Vec::new();
    while run < 10 {
        let waiting = stack.control_plane_metric(WAITING).await;
        seen.push(waiting);
        run = if waiting == envoys { run + 1 } else { 0 };
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "feed streams did not return to {envoys} per Envoy: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    start.elapsed()
}

/// Applies `reloads` updates of the resource `file` (from its first
/// version), each once Envoy took the last one, under load; asserts 0
/// non-2xx answers, each revocation within the bound, one feed stream per
/// Envoy at the end.
async fn reload_under_load(stack: &Stack, file: &Path, taken: &str, reloads: &[bool], what: &str) {
    let base = dynamic::read(file);
    let before = first_table_times(&stack.envoy_log()).len();
    let key = stack.tenant().api_key.clone();
    let load = Load::start(stack.url(PATH), key, CLIENTS);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut revocations = Vec::new();
    for (n, &new_vm) in reloads.iter().enumerate() {
        let count = counter(stack, taken).await;
        dynamic::replace_file(file, &version(&base, n, new_vm));
        let took = wait_counter_above(stack, taken, count).await;
        // Load on the new configuration before the revocation is timed.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let revocation = time_a_revocation(stack, n).await;
        println!(
            "{what} {n} (new vm_id: {}): taken in {took:?}, revocation {revocation:?}, {} answers so far",
            new_vm && Adapter::current() == Adapter::Wasm,
            load.total()
        );
        revocations.push(revocation);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counts = load.stop().await;
    report(what, &counts);
    let tables = first_table_times(&stack.envoy_log());
    println!(
        "{what}: ms from VM (or configuration) to its first table: {:?}",
        tables.get(before..).unwrap_or_default()
    );
    assert_eq!(counts.non_2xx(), 0, "{what}: refused answers: {counts:#?}");
    let max = revocations.iter().max().copied().unwrap_or_default();
    assert!(
        max < REVOCATION_BOUND,
        "{what}: a revocation took {max:?}: {revocations:?}"
    );
    let drained = wait_one_stream_each(stack, 1).await;
    println!("{what}: one feed stream per Envoy {drained:?} after the last reload's checks");
}

fn report(what: &str, counts: &Counts) {
    println!(
        "{what}: {} answers under load, by status {:?}, slowest {:?}; first failures: {:?}",
        counts.total(),
        counts.by_status,
        counts.slowest,
        counts.failures.iter().take(5).collect::<Vec<_>>()
    );
}

/// 5 listener updates with a new `vm_id` and 5 without, alternating.
#[tokio::test]
async fn lds_reloads_refuse_nothing() {
    let stack = Stack::start_with(options(dynamic::lds)).await;
    let reloads = [
        true, false, true, false, true, false, true, false, true, false,
    ];
    let file = lds_path(&stack.dir());
    reload_under_load(
        &stack,
        &file,
        "listener_manager.lds.update_success",
        &reloads,
        "LDS reload",
    )
    .await;
}

/// 5 filter updates by ECDS, with a new `vm_id` in every other one.
#[tokio::test]
async fn ecds_updates_refuse_nothing() {
    let stack = Stack::start_with(options(dynamic::ecds)).await;
    let reloads = [true, false, true, false, true];
    let file = ecds_path(&stack.dir());
    reload_under_load(
        &stack,
        &file,
        "extension_config_discovery.http_filter.keygate.config_reload",
        &reloads,
        "ECDS update",
    )
    .await;
}

/// An Envoy that starts while the control plane is down: requests sent at
/// once wait, and get 200 when the control plane comes back within the
/// bound (`first_table_wait_ms` 5000 here).
#[tokio::test]
async fn at_cold_start_requests_wait_for_the_first_table() {
    let options = StackOptions::default().replace(
        "\"max_staleness_seconds\": 300",
        "\"max_staleness_seconds\": 300, \"first_table_wait_ms\": 5000",
    );
    let mut stack = Stack::start_with(options).await;
    let key = stack.tenant().api_key.clone();
    stack.stop_control_plane();
    let ports = stack.start_another_envoy().await;
    let sent = Instant::now();
    let url = format!("http://127.0.0.1:{}{PATH}", ports.envoy);
    let requests: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let request = stack.client.get(&url).bearer_auth(&key);
            tokio::spawn(async move { Reply::read(request.send().await.unwrap()).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stack.start_control_plane().await;
    let restarted = sent.elapsed();
    let mut replies = Vec::new();
    for request in requests {
        replies.push(request.await.unwrap());
    }
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    println!(
        "cold start: {CLIENTS} requests sent at once answered {statuses:?} after {:?} (control plane up after {restarted:?})",
        sent.elapsed()
    );
    assert!(statuses.iter().all(|&s| s == 200), "{replies:#?}");
    // Decided as any other request: the upstream sees the identity, not the key.
    for reply in &replies {
        assert_eq!(
            reply.echoed_header("x-org-id"),
            Some(stack.tenant().tenant_id.as_str()),
            "{reply:#?}"
        );
        assert_eq!(reply.echoed_header("authorization"), None, "{reply:#?}");
    }
    let tables = first_table_times(&read_log(&stack.dir().join("envoy-2.log")));
    println!("cold start: ms from VM (or configuration) to its first table: {tables:?}");
}

/// Past the bound, a request that waited gets the 503 JSON.
#[tokio::test]
async fn past_the_bound_a_waiting_request_gets_503() {
    let options = StackOptions {
        control_plane: false,
        ..Default::default()
    }
    .replace(
        "\"max_staleness_seconds\": 300",
        "\"max_staleness_seconds\": 300, \"first_table_wait_ms\": 700",
    );
    let stack = Stack::start_with(options).await;
    let key = keygate::key::generate("rk", keygate::key::Environment::Live).unwrap();
    let sent = Instant::now();
    stack
        .get(PATH, &key)
        .await
        .expect_error(503, "unavailable", NOT_READY);
    let waited = sent.elapsed();
    println!("no control plane: 503 after {waited:?} (bound 700 ms)");
    assert!(
        waited >= Duration::from_millis(650),
        "answered before the bound"
    );
    assert!(
        waited < Duration::from_millis(3000),
        "answered long after the bound"
    );
    // A body arriving while the request waits does not let it through.
    let sent = Instant::now();
    stack
        .send(
            stack
                .request(Method::POST, PATH)
                .bearer_auth(&key)
                .body("x".repeat(10_000)),
        )
        .await
        .expect_error(503, "unavailable", NOT_READY);
    println!(
        "no control plane: POST with a body: 503 after {:?}",
        sent.elapsed()
    );
    // A client that goes away while its request waits is forgotten: the VM
    // goes on, and the next request waits and is answered as before.
    let gone = stack
        .request(Method::GET, PATH)
        .bearer_auth(&key)
        .timeout(Duration::from_millis(100))
        .send()
        .await;
    assert!(gone.is_err(), "answered within 100 ms: {gone:?}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    stack
        .get(PATH, &key)
        .await
        .expect_error(503, "unavailable", NOT_READY);
    let waited = stack.filter_stat("keygate_waited").await;
    println!("no control plane: keygate_waited {waited:?}");
    assert_eq!(waited, Some(4), "every keyed request waited once");
    assert!(!stack.envoy_log().contains("panicked"), "a VM crashed");
    // CORS preflights and public routes never wait.
    let sent = Instant::now();
    let preflight = stack
        .send(
            stack
                .request(Method::OPTIONS, PATH)
                .header("origin", "https://example.com")
                .header("access-control-request-method", "GET"),
        )
        .await;
    let public = stack
        .send(
            stack
                .request(Method::POST, "/api/v1/tenants")
                .json(&json!({})),
        )
        .await;
    println!(
        "no control plane: preflight {} and public route {} answered in {:?}",
        preflight.status,
        public.status,
        sent.elapsed()
    );
    assert_ne!(preflight.status, 503);
    assert!(sent.elapsed() < Duration::from_millis(600), "they waited");
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
