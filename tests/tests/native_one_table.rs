//! The native adapter holds one key table per Envoy process, shared by all
//! its workers (issue 13): loading a big table grows Envoy's RSS by about
//! one table at `--concurrency 4`, as at `--concurrency 1`, not by four
//! (the wasm filter holds one copy per worker). Native only.
//!
//! The big table comes from the bench's synthetic feed server (the real
//! keys the probe presents plus pseudo-random hashes, `docs/feed-protocol.md`
//! pages), listening where the control plane would: the control plane has
//! no bulk import, and minting 500k keys through its API would take minutes.

use keygate_bench::feed_server::{FeedServer, PAGE_KEYS};
use keygate_bench::keys;
use keygate_e2e::{only_on, Adapter, Stack, StackOptions, FEED_TOKEN};
use std::net::SocketAddr;
use std::time::Duration;

/// Keys in the big table: about 20 MiB of table (41.5 B a key).
const KEYS: usize = 500_000;
/// The table's bytes in the core's layout (`src/table.rs`), for the report.
const TABLE_BYTES: f64 = KEYS as f64 * 41.5;
/// Time after the table works for the memory freed while loading to go back
/// to the OS (`memory_allocator_manager` releases 64 MiB a second).
const SETTLE: Duration = Duration::from_secs(3);
const MIB: f64 = 1024.0 * 1024.0;

/// Envoy's resident memory in bytes (`VmRSS` of `/proc/<pid>/status`).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"));
    kib * 1024
}

/// Envoy with `concurrency` workers fed a table of `total` keys (the first
/// is `key`): its RSS once the key passes on every worker and the loading
/// garbage is gone.
async fn rss_with_table(concurrency: u32, total: usize, key: &str) -> u64 {
    let options = StackOptions {
        control_plane: false,
        concurrency,
        ..StackOptions::default()
    };
    let stack = Stack::start_with(options).await;
    let body = keys::snapshot(1, total, &[key.to_string()]);
    let feed_addr = SocketAddr::from(([127, 0, 0, 1], stack.ports.control_plane));
    let _feed = FeedServer::start_at(feed_addr, &body, 1, FEED_TOKEN, PAGE_KEYS).unwrap();
    let took = stack.wait_key_works(key).await;
    tokio::time::sleep(SETTLE).await;
    let bytes = rss(stack.envoy_pid());
    let table_keys = stack.filter_stat("keygate_table_keys").await;
    println!(
        "--concurrency {concurrency}, {total} keys: passes after {took:?}, RSS {:.1} MiB, keygate_table_keys {table_keys:?}",
        bytes as f64 / MIB
    );
    assert_eq!(table_keys, Some(total as u64), "the whole table is loaded");
    bytes
}

/// RSS growth from a one-key table to a [`KEYS`]-key one at `concurrency`.
async fn growth(concurrency: u32, key: &str) -> f64 {
    let small = rss_with_table(concurrency, 1, key).await;
    let big = rss_with_table(concurrency, KEYS, key).await;
    big as f64 - small as f64
}

#[tokio::test]
async fn concurrency_4_holds_exactly_one_table() {
    if !only_on(
        Adapter::Native,
        "the wasm filter holds one table per worker by design",
    ) {
        return;
    }
    let key = keys::real_keys(1).unwrap().remove(0);
    let one = growth(1, &key).await;
    let four = growth(4, &key).await;
    println!(
        "{KEYS}-key table ({:.1} MiB in the core's layout): RSS grows {:.1} MiB at --concurrency 1, \
{:.1} MiB at --concurrency 4 ({:.2}x; one table per worker would be 4x)",
        TABLE_BYTES / MIB,
        one / MIB,
        four / MIB,
        four / one
    );
    assert!(
        one > TABLE_BYTES / 2.0,
        "the table is not in Envoy's memory at --concurrency 1"
    );
    assert!(
        four < one + TABLE_BYTES / 2.0,
        "--concurrency 4 holds more than one table: {:.1} MiB against {:.1} MiB",
        four / MIB,
        one / MIB
    );
}
