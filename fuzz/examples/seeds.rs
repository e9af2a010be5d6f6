//! Writes the binary seed inputs of `fuzz/seeds/` (feed bodies, header maps,
//! a valid key) from the real encoders: `cargo run --manifest-path
//! fuzz/Cargo.toml --example seeds` (rerun it after a change of the feed
//! format). The text seeds are written by hand.

use keygate::feed::{
    encode_delta, encode_snapshot, encode_snapshot_page, FeedEntry, FeedOp, KeySet, KeyStatus,
};
use keygate::limits::RateLimits;
use keygate::ids::{KeyId, OrgId};
use keygate::key::{self, Environment};
use keygate_filter::headers::serialize;
use std::fs;
use std::path::Path;

/// The key set of every seed body but one (a delta of another key set).
const KS: KeySet = KeySet([7; 16]);

fn entry(n: u8, scopes: &str, tier: &str, expires_at: u64) -> FeedEntry {
    FeedEntry {
        hash: [n; 32],
        key_id: KeyId(u64::from(n)),
        org_id: OrgId(u64::from(n % 3)),
        expires_at,
        scopes: scopes.into(),
        tier: tier.into(),
        environment: if n % 2 == 0 {
            Environment::Live
        } else {
            Environment::Test
        },
        // Some keys with a status, own limits or an owner (KGT3's extras).
        status: KeyStatus::ALL[usize::from(n % 4)],
        limits: RateLimits {
            per_minute: u32::from(n % 5) * 10,
            per_day: if n % 3 == 0 { 1000 } else { 0 },
        },
        external_id: (n % 2 == 1).then(|| format!("user-{n}")),
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    fs::write(dir.join(name), bytes)
}

fn main() -> std::io::Result<()> {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let keys: Vec<FeedEntry> = (1..=6)
        .map(|n| {
            entry(
                n * 40,
                "read write",
                if n < 4 { "free" } else { "pro" },
                u64::from(n) << 31,
            )
        })
        .collect();
    let snapshot = encode_snapshot(KS, 7, &keys);
    let delta = encode_delta(
        KS,
        7,
        9,
        &[
            FeedOp::Remove([80; 32]),
            FeedOp::Upsert(entry(80, "read", "pro", 0)),
            FeedOp::Upsert(entry(9, "admin", "enterprise", 1_700_000_000)),
            FeedOp::Remove([200; 32]),
        ],
    );
    let later = encode_delta(KS, 9, 10, &[FeedOp::Remove([9; 32])]);
    let feed = seeds.join("feed");
    write(&feed, "snapshot", &snapshot)?;
    write(
        &feed,
        "snapshot-then-deltas",
        &[snapshot.clone(), delta.clone(), later].concat(),
    )?;
    let (first, rest) = keys.split_at(2);
    let (second, last) = rest.split_at(2);
    let pages = [
        encode_snapshot_page(KS, 5, first, true),
        encode_snapshot_page(KS, 6, second, true),
        encode_snapshot_page(KS, 5, last, false),
        encode_delta(KS, 5, 9, &[FeedOp::Remove([40; 32])]),
    ];
    write(&feed, "pages-then-delta", &pages.concat())?;
    write(
        &feed,
        "delta-of-other-key-set",
        &[snapshot.clone(), encode_delta(KeySet([8; 16]), 7, 8, &[])].concat(),
    )?;
    write(
        &feed,
        "delta-on-other-base",
        &[snapshot, encode_delta(KS, 3, 4, &[])].concat(),
    )?;

    let maps = seeds.join("header_map");
    let request: [(&str, &[u8]); 5] = [
        (":method", b"GET"),
        (":path", b"/v1/things?api_key=x"),
        (":authority", b"api.example"),
        ("x-api-key", b"rk_test_x"),
        ("latin1", b"caf\xe9"),
    ];
    write(&maps, "request", &serialize(&request))?;
    write(&maps, "empty-map", &serialize::<&str, &str>(&[]))?;

    let valid = key::generate(key::DEFAULT_PREFIX, Environment::Test)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    write(
        &seeds.join("key"),
        "valid",
        format!("rk\n{valid}").as_bytes(),
    )?;
    let secret_only = key::KeyFormat::PrefixSecret
        .generate("raeh", Environment::Live)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    write(
        &seeds.join("key"),
        "valid-prefix-secret",
        format!("raeh\n{secret_only}").as_bytes(),
    )?;
    Ok(())
}
