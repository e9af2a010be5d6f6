//! The key table feed: first table, outage, staleness, one stream per Envoy
//! (SPEC §7), counted at the control plane, and which thread fetches and
//! which hold the table.

use keygate_e2e::{only_on, Adapter, Stack, StackOptions};
use reqwest::Method;
use std::time::{Duration, Instant};

const NOT_READY: &str = "Authentication is not ready";

/// Before the first table a request waits `first_table_wait_ms` (500 ms
/// here), then gets 503.
#[tokio::test]
async fn before_the_first_table_requests_get_503() {
    let options = StackOptions {
        control_plane: false,
        ..Default::default()
    }
    .replace(
        "\"max_staleness_seconds\": 300",
        "\"max_staleness_seconds\": 300, \"first_table_wait_ms\": 500",
    );
    let mut stack = Stack::start_with(options).await;
    let key = keygate::key::generate("rk", keygate::key::Environment::Live).unwrap();
    let without_key = stack.request(Method::GET, "/anything");
    let requests = [
        stack
            .request(Method::GET, "/api/v1/memory")
            .bearer_auth(&key),
        stack.request(Method::GET, "/anything").bearer_auth(&key),
        without_key,
    ];
    for request in requests {
        let sent = Instant::now();
        stack
            .send(request)
            .await
            .expect_error(503, "unavailable", NOT_READY);
        let waited = sent.elapsed();
        println!("no table yet: 503 after {waited:?}");
        assert!(
            waited >= Duration::from_millis(450),
            "refused before the wait"
        );
    }

    let start = Instant::now();
    stack.start_control_plane().await;
    let tenant = stack.new_tenant("late").await;
    println!(
        "first table: a new tenant's key worked {:?} after the control plane started",
        start.elapsed()
    );
    stack
        .get("/api/v1/memory", &tenant.api_key)
        .await
        .expect(200);
}

#[tokio::test]
async fn control_plane_outage_keeps_the_last_table() {
    let mut stack = Stack::start().await;
    let key = stack.tenant().api_key.clone();
    let unknown = keygate::key::generate("rk", keygate::key::Environment::Live).unwrap();
    stack.stop_control_plane();
    // Longer than several retry periods (retry_ms 1000).
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        stack.get("/api/v1/memory", &key).await.expect(200);
        stack.get("/api/v1/memory", &unknown).await.expect_error(
            401,
            "unauthorized",
            "Invalid API key",
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The control plane comes back (same database): changes flow again.
    stack.start_control_plane().await;
    let start = Instant::now();
    let tenant = stack.new_tenant("after outage").await;
    println!(
        "after the outage, a new key worked {:?} after the control plane restarted",
        start.elapsed()
    );
    stack
        .get("/api/v1/memory", &tenant.api_key)
        .await
        .expect(200);
    stack.get("/api/v1/memory", &key).await.expect(200);
}

#[tokio::test]
async fn a_table_older_than_max_staleness_is_not_trusted() {
    let options = StackOptions::default().replace(
        "\"max_staleness_seconds\": 300",
        "\"max_staleness_seconds\": 3",
    );
    let mut stack = Stack::start_with(options).await;
    let key = stack.tenant().api_key.clone();
    stack.stop_control_plane();
    let stopped = Instant::now();
    stack.get("/api/v1/memory", &key).await.expect(200);
    let (reply, _) = stack
        .wait_steady("/api/v1/memory", &key, 503, Duration::from_secs(30))
        .await;
    println!(
        "staleness 3 s: refused {:?} after the control plane stopped",
        stopped.elapsed()
    );
    reply.expect_error(503, "unavailable", NOT_READY);
    assert!(
        stopped.elapsed() >= Duration::from_secs(2),
        "refused too early"
    );
    // A stale table is refused at once: only a VM that never had one waits.
    let sent = Instant::now();
    stack
        .get("/api/v1/memory", &key)
        .await
        .expect_error(503, "unavailable", NOT_READY);
    println!("stale table: 503 in {:?}", sent.elapsed());
    assert!(
        sent.elapsed() < Duration::from_millis(500),
        "a stale table made the request wait"
    );
    stack.start_control_plane().await;
    stack.wait_key_works(&key).await;
}

/// Feed activity seen over [`SAMPLES`] samples, 100 ms apart.
struct FeedWindow {
    /// `keygate_feed_waiting` at the control plane: long-polls held.
    waiting: Vec<u64>,
    /// The first Envoy's own view: feed requests in flight.
    in_flight: Vec<u64>,
    /// Feed answers the control plane gave during the window.
    requests: u64,
}

const SAMPLES: usize = 30;
const WAITING: &str = "keygate_feed_waiting";

async fn watch_feed(stack: &Stack) -> FeedWindow {
    let requests = "keygate_feed_requests_total";
    let active = "cluster.keygate_control_plane.upstream_rq_active";
    let first = stack.control_plane_metric(requests).await;
    let mut window = FeedWindow {
        waiting: Vec::new(),
        in_flight: Vec::new(),
        requests: 0,
    };
    for _ in 0..SAMPLES {
        window
            .waiting
            .push(stack.control_plane_metric(WAITING).await);
        window.in_flight.push(stack.stat(active).await.unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    window.requests = stack.control_plane_metric(requests).await - first;
    println!(
        "feed: held long-polls {:?}, first Envoy in flight {:?}; {} feed requests in 3 s",
        window.waiting, window.in_flight, window.requests
    );
    window
}

/// Checks a window with `envoys` Envoys on an unchanged table: exactly one
/// long-poll each, about one request per long-poll period each.
fn assert_one_stream_each(window: &FeedWindow, envoys: u64) {
    let FeedWindow {
        waiting, in_flight, ..
    } = window;
    assert!(
        waiting.iter().all(|&n| n <= envoys),
        "more than one feed stream per Envoy: {waiting:?}"
    );
    assert!(
        waiting.contains(&envoys),
        "not one long-poll held per Envoy: {waiting:?}"
    );
    assert!(
        in_flight.iter().all(|&n| n <= 1),
        "Envoy sees more than one feed request in flight: {in_flight:?}"
    );
    assert!(
        window.requests <= 2 * envoys,
        "{} feed requests in 3 s from {envoys} Envoy(s) with an unchanged table",
        window.requests
    );
}

/// One long-poll per Envoy process (2 workers each), not one per worker,
/// counted at the control plane (`/metrics`), the Envoy's own count as a
/// cross-check; a second Envoy adds exactly one more.
#[tokio::test]
async fn one_fetch_stream_per_envoy() {
    // Usage reports share the feed cluster: off here, so that the cluster's
    // requests in flight are the feed's alone.
    let options =
        StackOptions::default().replace("\"usage\": {", "\"usage\": {\"enabled\": false, ");
    let mut stack = Stack::start_with(options).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_one_stream_each(&watch_feed(&stack).await, 1);

    stack.start_another_envoy().await;
    let start = Instant::now();
    while stack.control_plane_metric(WAITING).await < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the second Envoy never held a long-poll"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("second Envoy: long-poll held after {:?}", start.elapsed());
    assert_one_stream_each(&watch_feed(&stack).await, 2);
}

/// The Envoy thread a log line was written on (`[time][thread][level]…`).
fn thread_of(line: &str) -> Option<&str> {
    line.split('[').nth(2)?.split(']').next()
}

/// Threads whose log lines contain `needle`.
fn threads_logging<'l>(log: &'l str, needle: &str) -> Vec<&'l str> {
    let mut threads: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(needle))
        .filter_map(thread_of)
        .collect();
    threads.sort_unstable();
    threads.dedup();
    threads
}

/// The VM that fetches is the main thread's, which serves no request and so
/// keeps no table of its own; each worker loads the table (from shared
/// data, or for its first table straight from the control plane when shared
/// data has none yet).
#[tokio::test]
async fn the_main_thread_fetches_and_each_worker_holds_the_table() {
    if !only_on(
        Adapter::Wasm,
        "the native module holds one table per process, not one per worker (tests/native_one_table.rs)",
    ) {
        return;
    }
    let stack = Stack::start().await;
    // The workers may have fetched their first table themselves, before the
    // leader's first fetch (retried every retry_ms until the control plane
    // came up): wait for that one.
    let start = Instant::now();
    while !stack.envoy_log().contains("fetched (") && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = stack.envoy_log();
    let main = threads_logging(&log, "starting main dispatch loop");
    let fetching = threads_logging(&log, "fetched (");
    let loading = threads_logging(&log, "first key table (");
    println!("main thread {main:?}, fetching on {fetching:?}, loaded on {loading:?}");
    assert_eq!(main.len(), 1, "one main thread: {main:?}");
    assert_eq!(fetching, main, "the fetch runs on the main thread");
    assert_eq!(loading.len(), 2, "both workers load the table: {loading:?}");
    assert!(
        loading.iter().all(|t| !main.contains(t)),
        "the main thread keeps no table: {loading:?}"
    );
}
