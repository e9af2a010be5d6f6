//! Key sets for the variants: real keys for the load, synthetic ones for bulk.
//!
//! keygate's table holds only SHA-256 hashes, so a 1M-key table is made of
//! 1M pseudo-random hashes (no real key behind them: generating and hashing
//! a million keys would only slow the harness) plus the hashes of the few
//! real keys the load generator and the probes present.

use keygate::feed::{encode_snapshot, FeedEntry, KeySet};

/// The key set of the synthetic tables.
const KEY_SET: KeySet = KeySet([0x6b; 16]);
use keygate::ids::{KeyId, OrgId};
use keygate::key::{self, Environment};
use keygate::limits::RateLimits;

/// The own limits of the real keys in [`limited_snapshot`]: counted on every
/// request, never reached by a bench run.
pub const UNREACHED: RateLimits = RateLimits {
    per_minute: u32::MAX,
    per_day: u32::MAX,
};

/// Real keys, minted like the control plane mints them.
pub fn real_keys(n: usize) -> Result<Vec<String>, key::KeyError> {
    (0..n)
        .map(|_| key::generate(key::DEFAULT_PREFIX, Environment::Live))
        .collect()
}

/// SplitMix64: a fast, well-spread generator for synthetic hashes.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn entry(i: u64, hash: [u8; 32]) -> FeedEntry {
    FeedEntry {
        hash,
        key_id: KeyId(i + 1),
        org_id: OrgId(i / 16 + 1),
        expires_at: 0,
        scopes: if i.is_multiple_of(2) {
            "memory:read memory:write".into()
        } else {
            "memory:read users:read conversations:read".into()
        },
        tier: if i.is_multiple_of(3) { "free" } else { "pro" }.into(),
        environment: Environment::Live,
        ..FeedEntry::default()
    }
}

/// A `KGT3` snapshot at `version` holding `real` keys plus synthetic ones, `total` in all.
pub fn snapshot(version: u64, total: usize, real: &[String]) -> Vec<u8> {
    snapshot_with(version, total, real, RateLimits::NONE)
}

/// Like [`snapshot`], but each real key has its own limits ([`UNREACHED`]),
/// so every request of theirs goes through the per-key counter.
pub fn limited_snapshot(version: u64, total: usize, real: &[String]) -> Vec<u8> {
    snapshot_with(version, total, real, UNREACHED)
}

fn snapshot_with(version: u64, total: usize, real: &[String], limits: RateLimits) -> Vec<u8> {
    let mut rng = SplitMix(0x6b65_7967_6174_6531);
    let mut entries: Vec<FeedEntry> = real
        .iter()
        .take(total)
        .zip(0..)
        .map(|(k, i)| FeedEntry {
            limits,
            ..entry(i, key::hash(k))
        })
        .collect();
    for i in entries.len() as u64..total as u64 {
        let mut hash = [0u8; 32];
        for chunk in hash.chunks_exact_mut(8) {
            chunk.copy_from_slice(&rng.next().to_le_bytes());
        }
        entries.push(entry(i, hash));
    }
    encode_snapshot(KEY_SET, version, &entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate::table::{decode, Update};

    #[test]
    fn snapshot_holds_the_real_keys() {
        let real = real_keys(2).unwrap();
        let body = snapshot(7, 1000, &real);
        let Ok(Update::Snapshot(table)) = decode(&body) else {
            panic!("not a snapshot")
        };
        assert_eq!(table.version(), 7);
        assert_eq!(table.len(), 1000);
        assert!(table.get(&key::hash(&real[1])).is_some());
    }
}
