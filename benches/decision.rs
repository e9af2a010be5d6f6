//! Cost of one full decision natively (SHA-256 included), the memory of a
//! 1M-key table, its build time (whole, and in pages of 16384 keys as the
//! filter loads it) and the cost of a delta, with and without a merge. Run
//! with `cargo bench --bench decision`.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use keygate::config::FilterConfig;
use keygate::decision::{Policy, Request};
use keygate::feed::{encode_delta, encode_snapshot, encode_snapshot_page, FeedEntry, FeedOp};
use keygate::ids::{KeyId, OrgId};
use keygate::key::{self, Environment};
use keygate::table::{decode, KeyTable, SnapshotBuilder, Update};
use std::time::Instant;

const KS: keygate::feed::KeySet = keygate::feed::KeySet([7; 16]);

const CONFIG: &str = r#"{"feed":{"cluster":"cp"},"rules":[
  {"path_prefix":"/api/v1/tenants","methods":["POST"],"public":true},
  {"path_prefix":"/api/v1/memory","methods":["GET"],"any_of":["memory:read"]},
  {"path_prefix":"/api/v1/memory","any_of":["memory:write"]}]}"#;

/// A table of `n` synthetic keys plus one real key, which is returned.
fn table_with(n: u64) -> (KeyTable, String) {
    let real = key::generate("rk", Environment::Live).unwrap();
    let mut entries: Vec<FeedEntry> = (0..n).map(synthetic).collect();
    entries.push(entry(key::hash(&real), n));
    entries.sort_unstable_by_key(|e| e.hash);
    let bytes = encode_snapshot(KS, 1, &entries);
    let started = Instant::now();
    let Update::Snapshot(table) = decode(&bytes).unwrap() else {
        unreachable!()
    };
    println!(
        "table {n} keys: snapshot {:.1} MB, decoded in {:.0} ms, {:.1} MB in memory ({:.0} B/key)",
        bytes.len() as f64 / 1e6,
        started.elapsed().as_secs_f64() * 1e3,
        table.memory_bytes() as f64 / 1e6,
        table.memory_bytes() as f64 / table.len() as f64
    );
    let paged = build_from_pages(&entries);
    assert_eq!(paged.len(), table.len());
    (*table, real)
}

/// Synthetic key `i`, its hash spread over the whole range.
fn synthetic(i: u64) -> FeedEntry {
    let mut hash = [0u8; 32];
    hash[..8].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    hash[8..16].copy_from_slice(&i.to_le_bytes());
    entry(hash, i)
}

/// Builds the table from pages of 16384 keys (sorted `entries`), as the
/// filter does from shared data, and prints the time taken.
fn build_from_pages(entries: &[FeedEntry]) -> KeyTable {
    let chunks: Vec<&[FeedEntry]> = entries.chunks(16_384).collect();
    let pages: Vec<Vec<u8>> = chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| encode_snapshot_page(KS, 1, chunk, i + 1 < chunks.len()))
        .collect();
    let started = Instant::now();
    let mut builder = SnapshotBuilder::new(entries.len());
    for page in &pages {
        builder.add_page(page).unwrap();
    }
    let table = builder.finish().unwrap();
    println!(
        "  built from {} pages in {:.0} ms, {:.1} MB in memory",
        pages.len(),
        started.elapsed().as_secs_f64() * 1e3,
        table.memory_bytes() as f64 / 1e6
    );
    table
}

/// Applies new keys one delta at a time until a delta triggers a merge (the
/// overlay shrinks to empty), and prints the cost of both kinds of delta.
fn time_deltas(table: &mut KeyTable, first_new: u64) {
    let (mut plain, mut plain_count) = (0.0, 0u32);
    for i in first_new..first_new + 100_000 {
        let v = table.version();
        let body = encode_delta(KS, v, v + 1, &[FeedOp::Upsert(synthetic(i))]);
        let Update::Delta(delta) = decode(&body).unwrap() else {
            unreachable!()
        };
        let before = table.memory_bytes();
        let started = Instant::now();
        table.apply(&delta).unwrap();
        let took = started.elapsed().as_secs_f64() * 1e3;
        if table.memory_bytes() < before {
            println!(
                "  delta of one key: {:.4} ms (mean of {plain_count}); one that merges {} new keys: {took:.1} ms",
                plain / f64::from(plain_count.max(1)),
                i - first_new + 1
            );
            return;
        }
        plain += took;
        plain_count += 1;
    }
}

fn entry(hash: [u8; 32], i: u64) -> FeedEntry {
    FeedEntry {
        hash,
        key_id: KeyId(i),
        org_id: OrgId(i / 4),
        expires_at: 0,
        scopes: ["memory:read memory:write", "memory:read", "users:read"][(i % 3) as usize].into(),
        tier: ["free", "pro"][(i % 2) as usize].into(),
        environment: Environment::Live,
        ..FeedEntry::default()
    }
}

fn bench(c: &mut Criterion) {
    let policy = Policy::from(&FilterConfig::from_json(CONFIG.as_bytes()).unwrap());
    for n in [10_000u64, 1_000_000] {
        let (mut table, real) = table_with(n);
        time_deltas(&mut table, n + 1);
        let bearer = format!("Bearer {real}");
        let headers = [
            (":authority", "api.example.com"),
            ("user-agent", "bench/1.0"),
            ("accept", "*/*"),
            ("authorization", bearer.as_str()),
        ];
        let request = Request {
            method: "GET",
            path: "/api/v1/memory/42?x=1",
            headers: &headers,
        };
        c.bench_function(&format!("decide_allow_{n}_keys"), |b| {
            b.iter(|| black_box(policy.decide(Some(&table), black_box(&request), 1_800_000_000)))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
