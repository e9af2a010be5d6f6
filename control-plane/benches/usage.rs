//! Benchmark of usage on the real control plane over loopback HTTP (issues
//! 15 and 22): ingest of 100 Envoys' batches of 10,000 active keys each (one
//! interval; 4 batches in flight, then all 100 at once as Envoys flushing
//! together would; each with no key capped and with every active key capped,
//! the worst case of the caps' work in the ingest transaction), and a 30-day hourly usage query of one key
//! among 1,000,000 (each with hourly rows). The keys and hourly rows are
//! seeded with bulk SQL, not through the API. SQLite by default;
//! `KEYGATE_TEST_BACKEND=postgres` for PostgreSQL.
//!
//! Run: `cargo bench -p keygate-control-plane --bench usage` (`make bench-usage`).

// Test code: a failed unwrap or assertion is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../tests/common/mod.rs"]
mod common;

use common::{join_all, now, rfc3339, Server, FEED_TOKEN};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const KEYS: u64 = 1_000_000;
const ACTIVE_KEYS: u64 = 10_000;
const ENVOYS: usize = 100;
/// Batches in flight at once in each ingest row (Envoys report
/// independently: a few at a time, or all at once when their flushes align).
const SENDERS: [usize; 2] = [4, ENVOYS];
const INTERVAL: Duration = Duration::from_secs(10);
const HOURS: u64 = 30 * 24;
const QUERIES: usize = 20;

fn key_id(i: u64) -> String {
    format!("key_{i:016x}")
}

/// The tenant's id as the database stores it (the bits as a signed integer).
fn sql_tenant(id: &str) -> i64 {
    u64::from_str_radix(id.trim_start_matches("org_"), 16).unwrap() as i64
}

/// 1M keys of `tenant` (ids 1..=1M), each with one hourly row in the last
/// 30 days; key 1 with every hour of them (three outcomes); the active keys
/// capped by a monthly quota they never use up.
async fn seed(server: &Server, tenant: i64, first_hour: u64) {
    let now = now();
    let pg = server.on_postgres();
    let keys = if pg {
        format!(
            "INSERT INTO api_keys (id, tenant_id, name, key_hash, display_prefix, scopes, \
             environment, tier, created_at, in_table) \
             SELECT i, {tenant}, 'bulk', decode(md5(i::text) || md5((-i)::text), 'hex'), \
             'rk_live_bulk', 'memory:read', 'live', 'free', {now}, TRUE \
             FROM generate_series(1, {KEYS}) AS i;"
        )
    } else {
        format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {KEYS}) \
             INSERT INTO api_keys (id, tenant_id, name, key_hash, display_prefix, scopes, \
             environment, tier, created_at, in_table) \
             SELECT i, {tenant}, 'bulk', randomblob(32), 'rk_live_bulk', 'memory:read', \
             'live', 'free', {now}, 1 FROM n;"
        )
    };
    let ignore = if pg {
        ("", " ON CONFLICT DO NOTHING")
    } else {
        (" OR IGNORE", "")
    };
    let (or_ignore, on_conflict) = ignore;
    let hours = if pg {
        format!("SELECT h FROM generate_series(0, {}) AS h", HOURS - 1)
    } else {
        format!(
            "WITH RECURSIVE n(h) AS (SELECT 0 UNION ALL SELECT h + 1 FROM n WHERE h < {}) \
             SELECT h FROM n",
            HOURS - 1
        )
    };
    let statements = format!(
        "{keys}\n\
         INSERT{or_ignore} INTO usage_hour (key_id, tenant_id, hour, outcome, count, cost_micros) \
         SELECT id, tenant_id, {first_hour} + (id % {HOURS}) * 3600, 'allowed', 10, 1000 \
         FROM api_keys WHERE name = 'bulk'{on_conflict};\n\
         INSERT{or_ignore} INTO usage_hour (key_id, tenant_id, hour, outcome, count, cost_micros) \
         SELECT 1, {tenant}, {first_hour} + h * 3600, o.outcome, 7, 0 FROM ({hours}) AS hs, \
         (SELECT 'allowed' AS outcome UNION ALL SELECT 'rate_limited' UNION ALL SELECT 'invalid_key') AS o{on_conflict};"
    );
    let start = Instant::now();
    server.sql(&statements).await;
    println!(
        "seeded {KEYS} keys and {} hourly rows in {:?} (bulk SQL)",
        KEYS + HOURS * 3,
        start.elapsed()
    );
}

/// Gives every active key a monthly quota it never uses up.
async fn cap_active_keys(server: &Server) {
    let month = time::OffsetDateTime::now_utc();
    let month = time::Date::from_calendar_date(month.year(), month.month(), 1)
        .unwrap()
        .midnight()
        .assume_utc()
        .unix_timestamp();
    let caps = format!(
        r#"{{"quota":{{"limit":1000000000000,"period":"month","used":0,"period_start":{month},"announced":0}}}}"#
    );
    server
        .sql(&format!(
            "UPDATE api_keys SET caps = '{caps}' WHERE id <= {ACTIVE_KEYS} AND name = 'bulk';"
        ))
        .await;
}

/// The load average (1, 5, 15 minutes): other work on the machine.
fn load() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// One Envoy's batch for one interval: every active key in this minute.
fn batch(id: usize, key_set: &str, minute: u64) -> String {
    let keys: Vec<Value> = (1..=ACTIVE_KEYS)
        .map(|i| {
            json!({"key_id": key_id(i), "outcomes": {"allowed": 20, "rate_limited": 1},
                   "cost_micros": 1500})
        })
        .collect();
    json!({"batch_id": format!("{:032x}", id + 1), "key_set": key_set,
           "minutes": [{"minute": minute, "keys": keys}]})
    .to_string()
}

/// One interval of every Envoy's batches (ids from `first_id` on).
async fn ingest(server: &Server, first_id: usize, senders: usize, capped: &str) {
    let key_set = server
        .feed("")
        .await
        .header("x-keygate-key-set")
        .unwrap()
        .to_string();
    let minute = now() / 60 * 60;
    let bodies: Vec<String> = (0..ENVOYS)
        .map(|e| batch(first_id + e, &key_set, minute))
        .collect();
    // A client of its own per row: connections left idle by the row before
    // (a minute or more) failed with ETIMEDOUT when reused.
    let client = reqwest::Client::new();
    let mut latencies = Vec::new();
    let start = Instant::now();
    let sender = |s: usize| {
        let (bodies, client) = (&bodies, &client);
        async move {
            let mut times = Vec::new();
            for body in bodies.iter().skip(s).step_by(senders) {
                let t = Instant::now();
                let reply = client
                    .post(format!("{}/v1/usage", server.base))
                    .bearer_auth(FEED_TOKEN)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                // Say why a send failed (the connection, not the answer).
                let reply = reply.unwrap_or_else(|e| panic!("{e:?} after {:?}", t.elapsed()));
                assert_eq!(reply.status(), 200);
                let answer: Value = serde_json::from_slice(&reply.bytes().await.unwrap()).unwrap();
                assert_eq!(answer["unknown_keys"], 0);
                times.push(t.elapsed());
            }
            times
        }
    };
    for times in join_all((0..senders).map(sender)).await {
        latencies.extend(times);
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    let key_rows = ENVOYS as u64 * ACTIVE_KEYS;
    println!(
        "ingest: {ENVOYS} batches x {ACTIVE_KEYS} keys (2 outcomes each, {capped}), \
         {senders} at a time: {key_rows} key rows in {elapsed:?} = {:.0} key rows/s \
         ({:.0} outcome rows/s); batch p50 {:?} max {:?}; one {INTERVAL:?} interval {}; \
         load average {}",
        key_rows as f64 / elapsed.as_secs_f64(),
        2.0 * key_rows as f64 / elapsed.as_secs_f64(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
        if elapsed < INTERVAL {
            "kept up"
        } else {
            "NOT kept up"
        },
        load()
    );
}

async fn query(server: &Server, admin: &str, first_hour: u64) {
    let path = format!(
        "/api/v1/api-keys/{}/usage?from={}&to={}&granularity=hour",
        key_id(1),
        rfc3339(first_hour),
        rfc3339(first_hour + HOURS * 3600)
    );
    let mut times = Vec::new();
    for _ in 0..QUERIES {
        let t = Instant::now();
        let reply = server.call("GET", &path, Some(admin), None).await;
        times.push(t.elapsed());
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.json()["data"].as_array().unwrap().len() as u64, HOURS);
    }
    times.sort_unstable();
    println!(
        "30-day hourly usage query of one key among {KEYS}: {QUERIES} queries, \
         p50 {:.1} ms, max {:.1} ms ({HOURS} buckets)",
        times[QUERIES / 2].as_secs_f64() * 1000.0,
        times[QUERIES - 1].as_secs_f64() * 1000.0
    );
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark skipped: run it with `cargo bench -p keygate-control-plane`");
        return;
    }
    let server = Server::start_with(&common::plans::unthrottled()).await;
    let backend = if server.on_postgres() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    println!("usage bench on {backend}");
    let tenant = server.create_tenant("bench").await;
    let first_hour = now() / 3600 * 3600 - HOURS * 3600;
    seed(&server, sql_tenant(&tenant.id), first_hour).await;
    let mut first_id = 0;
    for capped in ["none capped", "all capped"] {
        if capped == "all capped" {
            cap_active_keys(&server).await;
        }
        for senders in SENDERS {
            ingest(&server, first_id, senders, capped).await;
            first_id += ENVOYS;
        }
    }
    query(&server, &tenant.key, first_hour).await;
}
