//! The key table: every live key's hash and what it may do, held in memory.
//!
//! Entries are 56 bytes in one `Vec`, indexed by a `hashbrown::HashTable`
//! of `u32` positions keyed on the SHA-256 itself (already uniform, so the
//! first 8 bytes are the hash). Lookups are O(1) and allocation-free; a 1M-key
//! table is about 66 MB. Scope sets and tiers are interned: a key holds indices.

use crate::feed::{FeedError, Header, RawEntry, RawOp, Reader};
use crate::ids::{KeyId, OrgId};
use crate::key::Environment;
use hashbrown::HashTable;
use std::collections::{HashMap, HashSet};

/// Most distinct scope sets one table holds.
const MAX_SCOPE_SETS: usize = u16::MAX as usize + 1;
/// Most distinct tiers one table holds.
const MAX_TIERS: usize = u8::MAX as usize + 1;

#[derive(Clone)]
struct Entry {
    hash: [u8; 32],
    key_id: u64,
    org_id: u64,
    /// Unix seconds, saturated to `u32`; 0 = never.
    expires_at: u32,
    scopes: u16,
    tier: u8,
    test: bool,
}

/// What the table knows about one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRecord<'t> {
    pub key_id: KeyId,
    pub org_id: OrgId,
    /// Unix seconds; 0 = never expires.
    pub expires_at: u64,
    /// Space-separated scopes.
    pub scopes: &'t str,
    pub tier: &'t str,
    pub environment: Environment,
}

impl KeyRecord<'_> {
    /// True once `now` (unix seconds) has reached the expiry.
    pub fn is_expired(&self, now: u64) -> bool {
        self.expires_at != 0 && now >= self.expires_at
    }
}

/// Interned strings with their reverse index.
#[derive(Default, Clone)]
struct Interner {
    strings: Vec<Box<str>>,
    index: HashMap<Box<str>, usize>,
}

impl Interner {
    fn intern(&mut self, s: &str, max: usize) -> Result<usize, FeedError> {
        if let Some(&i) = self.index.get(s) {
            return Ok(i);
        }
        if self.strings.len() >= max {
            return Err(FeedError::Dictionary);
        }
        self.strings.push(s.into());
        self.index.insert(s.into(), self.strings.len() - 1);
        Ok(self.strings.len() - 1)
    }

    fn get(&self, i: usize) -> &str {
        self.strings.get(i).map_or("", |s| s)
    }
}

/// The table at one version.
#[derive(Default, Clone)]
pub struct KeyTable {
    version: u64,
    entries: Vec<Entry>,
    index: HashTable<u32>,
    scope_sets: Interner,
    tiers: Interner,
}

/// A decoded feed body.
pub enum Update {
    /// A whole new table.
    Snapshot(KeyTable),
    /// Changes to apply to the current table.
    Delta(Delta),
}

/// Changes from `base` to `version`, with their strings resolved.
pub struct Delta {
    pub base: u64,
    pub version: u64,
    ops: Vec<RawOp>,
    dictionary: Vec<Box<str>>,
}

impl Delta {
    /// Number of ops carried.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when it carries no op (a version bump only).
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

fn bucket(hash: &[u8; 32]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(hash.get(..8).unwrap_or(&[0; 8]));
    u64::from_le_bytes(first)
}

/// Decodes a feed body: a snapshot becomes a table, a delta waits to be applied.
pub fn decode(bytes: &[u8]) -> Result<Update, FeedError> {
    let (header, mut reader) = Reader::header(bytes)?;
    if header.snapshot {
        KeyTable::from_reader(&header, reader).map(Update::Snapshot)
    } else {
        let dictionary = reader.dictionary()?.into_iter().map(Box::from).collect();
        let n = reader.op_count()?;
        let mut ops = Vec::with_capacity((n as usize).min(reader.remaining() / 33));
        for _ in 0..n {
            ops.push(reader.op()?);
        }
        reader.finish()?;
        let delta = Delta {
            base: header.base,
            version: header.version,
            ops,
            dictionary,
        };
        delta.check_dictionary()?;
        Ok(Update::Delta(delta))
    }
}

impl Delta {
    fn check_dictionary(&self) -> Result<(), FeedError> {
        let n = self.dictionary.len();
        let ok = self.ops.iter().all(|op| match op {
            RawOp::Upsert(e) => (e.scopes as usize) < n && (e.tier as usize) < n,
            RawOp::Remove(_) => true,
        });
        ok.then_some(()).ok_or(FeedError::Dictionary)
    }
}

impl KeyTable {
    /// The version of the feed this table reflects.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the table holds no key.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Heap bytes held by the table (entries, index and interned strings).
    pub fn memory_bytes(&self) -> usize {
        let strings = |i: &Interner| i.strings.iter().map(|s| 2 * s.len() + 64).sum::<usize>();
        self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.index.allocation_size()
            + strings(&self.scope_sets)
            + strings(&self.tiers)
    }

    /// The key with this SHA-256, if the table holds it.
    pub fn get(&self, hash: &[u8; 32]) -> Option<KeyRecord<'_>> {
        let entry = self.position(hash).and_then(|i| self.entries.get(i))?;
        Some(KeyRecord {
            key_id: KeyId(entry.key_id),
            org_id: OrgId(entry.org_id),
            expires_at: u64::from(entry.expires_at),
            scopes: self.scope_sets.get(usize::from(entry.scopes)),
            tier: self.tiers.get(usize::from(entry.tier)),
            environment: if entry.test {
                Environment::Test
            } else {
                Environment::Live
            },
        })
    }

    fn position(&self, hash: &[u8; 32]) -> Option<usize> {
        let entries = &self.entries;
        self.index
            .find(bucket(hash), |&i| {
                entries.get(i as usize).is_some_and(|e| &e.hash == hash)
            })
            .map(|&i| i as usize)
    }

    fn from_reader(header: &Header, mut reader: Reader<'_>) -> Result<KeyTable, FeedError> {
        let dictionary = reader.dictionary()?;
        let n = reader.op_count()?;
        let capacity = (n as usize).min(reader.remaining() / 33);
        let mut table = KeyTable {
            version: header.version,
            entries: Vec::with_capacity(capacity),
            index: HashTable::with_capacity(capacity),
            ..KeyTable::default()
        };
        for _ in 0..n {
            match reader.op()? {
                RawOp::Upsert(raw) => table.upsert(&raw, &dictionary)?,
                RawOp::Remove(_) => return Err(FeedError::RemoveInSnapshot),
            }
        }
        reader.finish()?;
        Ok(table)
    }

    /// Applies a delta whose base is this table's version; on error nothing changes.
    pub fn apply(&mut self, delta: &Delta) -> Result<(), FeedError> {
        if delta.base != self.version {
            return Err(FeedError::BaseMismatch {
                base: delta.base,
                have: self.version,
            });
        }
        let dictionary: Vec<&str> = delta.dictionary.iter().map(|s| &**s).collect();
        self.check_room(delta, &dictionary)?;
        for op in &delta.ops {
            match op {
                RawOp::Upsert(raw) => self.upsert(raw, &dictionary)?,
                RawOp::Remove(hash) => self.remove(hash),
            }
        }
        self.version = delta.version;
        Ok(())
    }

    /// Fails when the delta's new scope sets or tiers would overflow the
    /// interners, so that `apply` cannot fail half-way.
    fn check_room(&self, delta: &Delta, dictionary: &[&str]) -> Result<(), FeedError> {
        let mut new_scopes = HashSet::new();
        let mut new_tiers = HashSet::new();
        for op in &delta.ops {
            if let RawOp::Upsert(raw) = op {
                let text = |i: u32| dictionary.get(i as usize).copied().unwrap_or("");
                let (scopes, tier) = (text(raw.scopes), text(raw.tier));
                if !self.scope_sets.index.contains_key(scopes) {
                    new_scopes.insert(scopes);
                }
                if !self.tiers.index.contains_key(tier) {
                    new_tiers.insert(tier);
                }
            }
        }
        let fits = self.scope_sets.strings.len() + new_scopes.len() <= MAX_SCOPE_SETS
            && self.tiers.strings.len() + new_tiers.len() <= MAX_TIERS;
        fits.then_some(()).ok_or(FeedError::Dictionary)
    }

    fn upsert(&mut self, raw: &RawEntry, dictionary: &[&str]) -> Result<(), FeedError> {
        let text = |i: u32| {
            dictionary
                .get(i as usize)
                .copied()
                .ok_or(FeedError::Dictionary)
        };
        let scopes = self.scope_sets.intern(text(raw.scopes)?, MAX_SCOPE_SETS)?;
        let tier = self.tiers.intern(text(raw.tier)?, MAX_TIERS)?;
        let entry = Entry {
            hash: raw.hash,
            key_id: raw.key_id,
            org_id: raw.org_id,
            expires_at: u32::try_from(raw.expires_at).unwrap_or(u32::MAX),
            scopes: u16::try_from(scopes).map_err(|_| FeedError::Dictionary)?,
            tier: u8::try_from(tier).map_err(|_| FeedError::Dictionary)?,
            test: raw.environment == Environment::Test,
        };
        match self
            .position(&raw.hash)
            .and_then(|i| self.entries.get_mut(i))
        {
            Some(slot) => *slot = entry,
            None => {
                let i = u32::try_from(self.entries.len()).map_err(|_| FeedError::Dictionary)?;
                self.entries.push(entry);
                let entries = &self.entries;
                self.index.insert_unique(bucket(&raw.hash), i, |&j| {
                    entries.get(j as usize).map_or(0, |e| bucket(&e.hash))
                });
            }
        }
        Ok(())
    }

    fn remove(&mut self, hash: &[u8; 32]) {
        let Some(i) = self.position(hash) else {
            return;
        };
        if let Ok(found) = self.index.find_entry(bucket(hash), |&j| j as usize == i) {
            found.remove();
        }
        let last = self.entries.len().saturating_sub(1);
        self.entries.swap_remove(i);
        if i == last {
            return;
        }
        // The former last entry now sits at `i`: repoint its index slot.
        if let Some(moved) = self.entries.get(i).map(|e| bucket(&e.hash)) {
            if let Some(slot) = self.index.find_mut(moved, |&j| j as usize == last) {
                *slot = u32::try_from(i).unwrap_or(u32::MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::{encode_delta, encode_snapshot, FeedEntry, FeedOp};

    fn entry(n: u8, scopes: &str, tier: &str) -> FeedEntry {
        FeedEntry {
            hash: [n; 32],
            key_id: KeyId(u64::from(n)),
            org_id: OrgId(7),
            expires_at: 0,
            scopes: scopes.into(),
            tier: tier.into(),
            environment: Environment::Test,
        }
    }

    fn snapshot(version: u64, entries: &[FeedEntry]) -> KeyTable {
        match decode(&encode_snapshot(version, entries)).unwrap() {
            Update::Snapshot(t) => t,
            Update::Delta(_) => panic!("not a snapshot"),
        }
    }

    fn delta(base: u64, version: u64, ops: &[FeedOp]) -> Delta {
        match decode(&encode_delta(base, version, ops)).unwrap() {
            Update::Delta(d) => d,
            Update::Snapshot(_) => panic!("not a delta"),
        }
    }

    #[test]
    fn snapshot_round_trip() {
        let t = snapshot(
            5,
            &[
                entry(1, "memory:read", "free"),
                entry(2, "users:read", "pro"),
            ],
        );
        assert_eq!((t.version(), t.len()), (5, 2));
        let r = t.get(&[2; 32]).unwrap();
        assert_eq!(
            (r.key_id, r.org_id, r.scopes, r.tier),
            (KeyId(2), OrgId(7), "users:read", "pro")
        );
        assert_eq!(r.environment, Environment::Test);
        assert!(t.get(&[3; 32]).is_none());
    }

    #[test]
    fn delta_adds_replaces_and_removes() {
        let mut t = snapshot(
            5,
            &[
                entry(1, "a:b", "free"),
                entry(2, "a:b", "free"),
                entry(3, "a:b", "free"),
            ],
        );
        let d = delta(
            5,
            6,
            &[
                FeedOp::Remove([1; 32]),
                FeedOp::Upsert(entry(3, "c:d", "pro")),
                FeedOp::Upsert(entry(4, "e:f", "free")),
                FeedOp::Remove([9; 32]),
            ],
        );
        t.apply(&d).unwrap();
        assert_eq!((t.version(), t.len()), (6, 3));
        assert!(t.get(&[1; 32]).is_none());
        assert_eq!(t.get(&[2; 32]).unwrap().scopes, "a:b");
        assert_eq!(t.get(&[3; 32]).unwrap().scopes, "c:d");
        assert_eq!(t.get(&[3; 32]).unwrap().tier, "pro");
        assert_eq!(t.get(&[4; 32]).unwrap().key_id, KeyId(4));
    }

    #[test]
    fn removing_everything_in_any_order_keeps_index_consistent() {
        let entries: Vec<_> = (0..50).map(|n| entry(n, "a:b", "free")).collect();
        let mut t = snapshot(1, &entries);
        for (step, n) in [7u8, 49, 0, 25, 26, 1].iter().enumerate() {
            let v = t.version();
            t.apply(&delta(v, v + 1, &[FeedOp::Remove([*n; 32])]))
                .unwrap();
            assert!(t.get(&[*n; 32]).is_none());
            assert_eq!(t.len(), 50 - step - 1);
        }
        for n in (0..50u8).filter(|n| ![7, 49, 0, 25, 26, 1].contains(n)) {
            assert_eq!(t.get(&[n; 32]).unwrap().key_id, KeyId(u64::from(n)));
        }
    }

    #[test]
    fn delta_with_wrong_base_is_refused_whole() {
        let mut t = snapshot(5, &[entry(1, "a:b", "free")]);
        let err = t
            .apply(&delta(4, 6, &[FeedOp::Remove([1; 32])]))
            .unwrap_err();
        assert_eq!(err, FeedError::BaseMismatch { base: 4, have: 5 });
        assert_eq!((t.version(), t.len()), (5, 1));
    }

    #[test]
    fn garbage_is_an_error() {
        let good = encode_snapshot(3, &[entry(1, "a:b", "free")]);
        assert!(matches!(decode(b""), Err(FeedError::Magic)));
        assert!(matches!(
            decode(b"KGT2xxxxxxxxxxxxxxxxxx"),
            Err(FeedError::Magic)
        ));
        for cut in 0..good.len() {
            assert!(
                decode(&good[..cut]).is_err(),
                "prefix of {cut} bytes decoded"
            );
        }
        let mut long = good.clone();
        long.push(0);
        assert!(decode(&long).is_err());
        let mut remove_in_snapshot = encode_delta(0, 1, &[FeedOp::Remove([1; 32])]);
        remove_in_snapshot[4] = 1;
        assert!(matches!(
            decode(&remove_in_snapshot),
            Err(FeedError::RemoveInSnapshot)
        ));
    }

    #[test]
    fn memory_is_small_per_key() {
        let entries: Vec<_> = (0..=255).map(|n| entry(n, "a:b", "free")).collect();
        let t = snapshot(1, &entries);
        assert_eq!(std::mem::size_of::<Entry>(), 56);
        assert!(t.memory_bytes() < 256 * 120, "{}", t.memory_bytes());
    }
}
