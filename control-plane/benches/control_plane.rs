//! Benchmark of the real control plane over loopback HTTP, on a temporary
//! SQLite file (WAL, `synchronous = FULL`):
//! - key creations per second (concurrent clients, and one client's latency);
//! - feed delta latency: from a revoke's 200 to the waiting long-poll's answer;
//! - snapshot size and time (all pages) for the resulting table.
//!
//! Run: `cargo bench -p keygate-control-plane --bench control_plane`.

// Test code: a failed unwrap or assertion is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../tests/common/mod.rs"]
mod common;

use common::{join_all, Server};
use serde_json::json;
use std::time::{Duration, Instant};

const CONCURRENT_CLIENTS: usize = 16;
const KEYS_PER_CLIENT: usize = 500;
const SERIAL_KEYS: usize = 500;
const REVOCATIONS: usize = 200;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort_unstable();
    println!(
        "{name}: n={} p50={:?} p99={:?} max={:?}",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        samples[samples.len() - 1]
    );
}

async fn create(server: &Server, admin: &str, name: String) -> serde_json::Value {
    server
        .create_key(admin, json!({"name": name, "scopes": ["memory:read"]}))
        .await
}

async fn creations(server: &Server, admin: &str) {
    let start = Instant::now();
    let client = |c: usize| async move {
        for i in 0..KEYS_PER_CLIENT {
            create(server, admin, format!("c{c}-{i}")).await;
        }
    };
    join_all((0..CONCURRENT_CLIENTS).map(client)).await;
    let total = CONCURRENT_CLIENTS * KEYS_PER_CLIENT;
    let elapsed = start.elapsed();
    println!(
        "key creations, {CONCURRENT_CLIENTS} concurrent clients: {total} in {elapsed:?} = {:.0} keys/s",
        total as f64 / elapsed.as_secs_f64()
    );

    let mut latencies = Vec::with_capacity(SERIAL_KEYS);
    let start = Instant::now();
    for i in 0..SERIAL_KEYS {
        let t = Instant::now();
        create(server, admin, format!("s{i}")).await;
        latencies.push(t.elapsed());
    }
    println!(
        "key creations, one client: {:.0} keys/s",
        SERIAL_KEYS as f64 / start.elapsed().as_secs_f64()
    );
    report("key creation latency, one client", latencies);
}

/// One revoke while a filter waits: (revoke 200 → poll answer, DELETE sent → poll answer).
async fn one_revocation(server: &Server, admin: &str, i: usize) -> (Duration, Duration) {
    let made = create(server, admin, format!("r{i}")).await;
    let version = server.feed("").await.version();
    let query = format!("since={version}&wait=30");
    let poll = async {
        let reply = server.feed(&query).await;
        assert_eq!(reply.status, 200);
        Instant::now()
    };
    let revoke = async {
        // Let the long-poll reach the server first.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let sent = Instant::now();
        let path = format!("/api/v1/api-keys/{}", made["id"].as_str().unwrap());
        let reply = server.call("DELETE", &path, Some(admin), None).await;
        assert_eq!(reply.status, 200);
        (sent, Instant::now())
    };
    let (answered, (sent, acknowledged)) = tokio::join!(poll, revoke);
    (
        answered.saturating_duration_since(acknowledged),
        answered.saturating_duration_since(sent),
    )
}

async fn revocations(server: &Server, admin: &str) {
    let mut after_ack = Vec::with_capacity(REVOCATIONS);
    let mut after_send = Vec::with_capacity(REVOCATIONS);
    for i in 0..REVOCATIONS {
        let (a, s) = one_revocation(server, admin, i).await;
        after_ack.push(a);
        after_send.push(s);
    }
    report(
        "feed delta latency, revoke 200 -> long-poll answer",
        after_ack,
    );
    report(
        "feed delta latency, DELETE sent -> long-poll answer",
        after_send,
    );
}

async fn snapshot(server: &Server) {
    let start = Instant::now();
    let pages = server.snapshot_pages().await;
    let elapsed = start.elapsed();
    let table = common::assemble(&pages);
    let bytes: usize = pages.iter().map(|(reply, _)| reply.bytes.len()).sum();
    println!(
        "snapshot: {} keys in {} page(s), {bytes} bytes ({:.1} bytes/key), served in {elapsed:?}",
        table.len(),
        pages.len(),
        bytes as f64 / table.len() as f64
    );
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark skipped: run it with `cargo bench -p keygate-control-plane`");
        return;
    }
    // Creations at full speed: no management-rate limit.
    let server = Server::start_with(&common::plans::unthrottled()).await;
    let tenant = server.create_tenant("bench").await;
    creations(&server, &tenant.key).await;
    revocations(&server, &tenant.key).await;
    snapshot(&server).await;
}
