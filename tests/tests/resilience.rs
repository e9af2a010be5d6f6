//! The key table feed: first table, outage, staleness, one stream per Envoy
//! (SPEC §7).

use keygate_e2e::{Stack, StackOptions};
use reqwest::Method;
use std::time::{Duration, Instant};

const NOT_READY: &str = "Authentication is not ready";

#[tokio::test]
async fn before_the_first_table_requests_get_503() {
    let mut stack = Stack::start_with(StackOptions {
        control_plane: false,
        ..Default::default()
    })
    .await;
    let key = keygate::key::generate("rk", keygate::key::Environment::Live).unwrap();
    for path in ["/api/v1/memory", "/anything"] {
        stack
            .get(path, &key)
            .await
            .expect_error(503, "unavailable", NOT_READY);
    }
    stack
        .send(stack.request(Method::GET, "/anything"))
        .await
        .expect_error(503, "unavailable", NOT_READY);

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
    stack.start_control_plane().await;
    stack.wait_key_works(&key).await;
}

/// One long-poll per Envoy process (2 workers here), not one per worker:
/// the feed cluster never has more than one request in flight, and an
/// unchanged table costs about one request per long-poll period.
#[tokio::test]
async fn one_fetch_stream_per_envoy() {
    let stack = Stack::start().await;
    let active = "cluster.keygate_control_plane.upstream_rq_active";
    let total = "cluster.keygate_control_plane.upstream_rq_total";
    tokio::time::sleep(Duration::from_millis(500)).await;
    let first_total = stack.stat(total).await.unwrap_or(0);
    let mut samples = Vec::new();
    for _ in 0..30 {
        samples.push(stack.stat(active).await.unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let requests = stack.stat(total).await.unwrap_or(0) - first_total;
    println!("feed: in-flight samples {samples:?}; {requests} feed requests in 3 s");
    assert!(
        samples.iter().all(|&n| n <= 1),
        "more than one feed stream: {samples:?}"
    );
    assert!(samples.contains(&1), "no long-poll held open: {samples:?}");
    assert!(
        requests <= 2,
        "{requests} feed requests in 3 s with an unchanged table"
    );
}
