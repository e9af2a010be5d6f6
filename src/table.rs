//! The key table: every live key's hash and what it may do, held in memory.
//!
//! # Layout
//!
//! The filter runs in a wasm VM whose linear memory never shrinks, so the
//! table is built to keep the high-water mark low: about 41.5 MB for 1M keys,
//! with no second copy of the table while it is built or changed.
//!
//! - Each key is one 40-byte [`Entry`]: the first 16 bytes of the key's
//!   SHA-256, key id, org id, expiry (unix seconds saturated to `u32`), and
//!   interned scope set (`u16`) and tier (`u8`) indices plus a flags byte
//!   (environment, tombstone, the key's [`KeyStatus`] in two bits, and
//!   whether it has extras).
//!   Keys are matched on that 128-bit prefix alone: a presented key is
//!   mistaken for a stored one only if its SHA-256 shares the stored key's
//!   first 128 bits, a second preimage costing about 2^128 hash evaluations.
//!   Stored keys are drawn by the control plane from the OS CSPRNG, so two of
//!   them share a prefix with probability about n²/2^129 (nil); a snapshot
//!   that holds two equal prefixes is refused as out of order.
//! - The base is one `Vec<Entry>` sorted by prefix, with a directory of `u32`
//!   offsets by the prefix's top bits (one bucket per 8 to 16 keys), so a
//!   lookup is a binary search over a dozen entries. Lookups never allocate.
//! - Deltas change the base in place: an update overwrites its entry, a
//!   removal marks it (a tombstone). Only new keys go to a small overlay hash
//!   table, checked when the base misses. Once overlay and tombstones together
//!   reach `max(4096, base/32)` they are merged into the base in place:
//!   tombstones are compacted out in one forward pass, then the sorted new
//!   keys are merged from the back into the spare capacity, and the
//!   directory is rebuilt. A snapshot reserves 1/32 spare capacity for this,
//!   so merges do not reallocate until the table has grown by that much.
//! - A key's own rate limits and owner (`external_id`) live in a side map
//!   by prefix, only for the keys that have them (flag `FLAG_EXTRAS`): a
//!   key without them costs nothing more, and a lookup of it never touches
//!   the map; one with them about 50 bytes more, plus its owner's length.
//! - A snapshot arrives whole or in pages ([`SnapshotBuilder`]); each page's
//!   keys are appended in order, and the table is only indexed at the end.

use crate::feed::{
    check_external_id, FeedError, Header, KeySet, KeyStatus, RawEntry, RawOp, Reader, KIND_DELTA,
    KIND_PAGE, UPSERT_BYTES,
};
use crate::ids::{KeyId, OrgId};
use crate::key::Environment;
use crate::limits::RateLimits;
use hashbrown::HashTable;
use std::collections::{HashMap, HashSet};

/// Most distinct scope sets one table holds.
const MAX_SCOPE_SETS: usize = u16::MAX as usize + 1;
/// Most distinct tiers one table holds.
const MAX_TIERS: usize = u8::MAX as usize + 1;
/// The snapshot size hint is never trusted beyond this many keys (4x the
/// 1M-key target); a larger table still loads, growing as its pages come.
const MAX_EXPECTED_KEYS: usize = 1 << 22;
/// Fewest keys in a snapshot's first page to predict its size from
/// ([`SnapshotBuilder::size_from_density`]); smaller first pages grow the
/// table as it comes.
const MIN_DENSITY_KEYS: usize = 1024;
/// Fewest pending changes (overlay keys plus tombstones) that trigger a merge.
#[cfg(not(any(test, fuzzing)))]
const MIN_MERGE: usize = 4096;
/// Tests and fuzzing (`fuzz/`, built with `--cfg fuzzing`) merge early and often.
#[cfg(any(test, fuzzing))]
const MIN_MERGE: usize = 8;
/// Most directory bits: 16M buckets, enough for 128M keys.
const MAX_DIRECTORY_BITS: u32 = 24;
/// `Entry::flags` bits.
const FLAG_TEST: u8 = 1;
const FLAG_REMOVED: u8 = 2;
/// The two bits of the key's status (`KeyStatus::code`).
const STATUS_SHIFT: u8 = 2;
const STATUS_MASK: u8 = 0b11 << STATUS_SHIFT;
/// The key has an entry in `KeyTable::extras`.
const FLAG_EXTRAS: u8 = 16;

/// One key: 40 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Entry {
    /// First 16 bytes of the key's SHA-256.
    prefix: [u8; 16],
    key_id: u64,
    org_id: u64,
    /// Unix seconds, saturated to `u32`; 0 = never.
    expires_at: u32,
    /// Index into the table's scope sets.
    scopes: u16,
    /// Index into the table's tiers.
    tier: u8,
    /// `FLAG_TEST`, `FLAG_REMOVED`, `FLAG_EXTRAS` and the status bits.
    flags: u8,
}

impl Entry {
    fn is_removed(&self) -> bool {
        self.flags & FLAG_REMOVED != 0
    }

    fn status(&self) -> KeyStatus {
        KeyStatus::from_code((self.flags & STATUS_MASK) >> STATUS_SHIFT).unwrap_or_default()
    }
}

/// What only some keys carry: their own limits and owner.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Extras {
    limits: RateLimits,
    external_id: Option<Box<str>>,
}

impl Extras {
    /// The extras of `raw`, if it has any (its owner already checked).
    fn of(raw: &RawEntry, dictionary: &[&str]) -> Option<Extras> {
        let external_id = raw
            .external_id
            .and_then(|i| dictionary.get(i as usize))
            .map(|s| Box::from(*s));
        (external_id.is_some() || !raw.limits.is_none()).then_some(Extras {
            limits: raw.limits,
            external_id,
        })
    }

    fn memory_bytes(&self) -> usize {
        std::mem::size_of::<([u8; 16], Extras)>() + self.external_id.as_ref().map_or(0, |s| s.len())
    }
}

/// The prefix a key is matched on.
fn prefix_of(hash: &[u8; 32]) -> [u8; 16] {
    hash.first_chunk().copied().unwrap_or_default()
}

/// Hash of a prefix for the overlay (the prefix is already uniform).
fn overlay_hash(prefix: &[u8; 16]) -> u64 {
    u128::from_be_bytes(*prefix) as u64
}

/// What the table knows about one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRef<'t> {
    pub key_id: KeyId,
    pub org_id: OrgId,
    /// Unix seconds; 0 = never expires.
    pub expires_at: u64,
    /// Space-separated scopes.
    pub scopes: &'t str,
    pub tier: &'t str,
    pub environment: Environment,
    pub status: KeyStatus,
    /// The key's own limits ([`RateLimits::NONE`] when it has none).
    pub limits: RateLimits,
    /// The key's owner, forwarded as `x-key-owner`.
    pub external_id: Option<&'t str>,
}

impl KeyRef<'_> {
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

    fn memory_bytes(&self) -> usize {
        self.strings.iter().map(|s| 2 * s.len() + 64).sum()
    }
}

/// Maps one body's dictionary indices to the table's interned indices,
/// interning each string on first use only.
struct Resolver<'d> {
    dictionary: &'d [&'d str],
    scopes: Vec<Option<u16>>,
    tiers: Vec<Option<u8>>,
}

impl<'d> Resolver<'d> {
    fn new(dictionary: &'d [&'d str]) -> Self {
        Resolver {
            dictionary,
            scopes: vec![None; dictionary.len()],
            tiers: vec![None; dictionary.len()],
        }
    }

    /// The entry for `raw`, its strings interned into `scope_sets` and
    /// `tiers`, and its extras if it has any.
    fn entry(
        &mut self,
        raw: &RawEntry,
        scope_sets: &mut Interner,
        tiers: &mut Interner,
    ) -> Result<(Entry, Option<Extras>), FeedError> {
        let dictionary = self.dictionary;
        check_external_id(dictionary, raw)?;
        let extras = Extras::of(raw, dictionary);
        let scopes = resolve(
            &mut self.scopes,
            dictionary,
            raw.scopes,
            scope_sets,
            MAX_SCOPE_SETS,
        )?;
        let tier = resolve(&mut self.tiers, dictionary, raw.tier, tiers, MAX_TIERS)?;
        let test = raw.environment == Environment::Test;
        let flags = if test { FLAG_TEST } else { 0 }
            | if extras.is_some() { FLAG_EXTRAS } else { 0 }
            | (raw.status.code() << STATUS_SHIFT);
        let entry = Entry {
            prefix: prefix_of(&raw.hash),
            key_id: raw.key_id,
            org_id: raw.org_id,
            expires_at: u32::try_from(raw.expires_at).unwrap_or(u32::MAX),
            scopes,
            tier,
            flags,
        };
        Ok((entry, extras))
    }
}

/// The interned index of dictionary string `i`, cached in `cache`.
fn resolve<T: Copy + TryFrom<usize>>(
    cache: &mut [Option<T>],
    dictionary: &[&str],
    i: u32,
    interner: &mut Interner,
    max: usize,
) -> Result<T, FeedError> {
    let slot = cache.get_mut(i as usize).ok_or(FeedError::Dictionary)?;
    if let Some(known) = *slot {
        return Ok(known);
    }
    let text = dictionary.get(i as usize).ok_or(FeedError::Dictionary)?;
    let index = interner.intern(text, max)?;
    let index = T::try_from(index).map_err(|_| FeedError::Dictionary)?;
    *slot = Some(index);
    Ok(index)
}

/// Offsets into the sorted base by the prefix's top `bits` bits: bucket `b`
/// holds the entries `offsets[b]..offsets[b + 1]`.
#[derive(Default, Clone)]
struct Directory {
    bits: u32,
    offsets: Vec<u32>,
}

impl Directory {
    /// The bucket of `prefix`.
    fn bucket(&self, prefix: &[u8; 16]) -> usize {
        let top = u128::from_be_bytes(*prefix).checked_shr(128 - self.bits);
        top.map_or(0, |b| b as usize)
    }

    /// Indexes `entries` (sorted by prefix), reusing the offsets' memory.
    fn rebuild(&mut self, entries: &[Entry]) {
        let per_eight = (entries.len() / 8).max(1);
        self.bits = per_eight.ilog2().min(MAX_DIRECTORY_BITS);
        let buckets = 1usize << self.bits;
        self.offsets.clear();
        self.offsets.reserve_exact(buckets + 1);
        for (i, entry) in entries.iter().enumerate() {
            let b = self.bucket(&entry.prefix);
            self.fill_to(b, i);
        }
        self.fill_to(buckets, entries.len());
    }

    /// Starts every bucket up to `bucket` (included) at `at`.
    fn fill_to(&mut self, bucket: usize, at: usize) {
        let at = u32::try_from(at).unwrap_or(u32::MAX);
        while self.offsets.len() <= bucket {
            self.offsets.push(at);
        }
    }

    /// The range of entries that may hold `prefix`.
    fn range(&self, prefix: &[u8; 16]) -> Option<(usize, usize)> {
        let b = self.bucket(prefix);
        let start = *self.offsets.get(b)?;
        let end = *self.offsets.get(b + 1)?;
        Some((start as usize, end as usize))
    }
}

/// The table at one version of one key set.
#[derive(Default, Clone)]
pub struct KeyTable {
    key_set: KeySet,
    version: u64,
    /// Sorted by prefix; may hold tombstones.
    base: Vec<Entry>,
    directory: Directory,
    /// Keys the base does not hold, added by deltas since the last merge.
    overlay: HashTable<Entry>,
    /// Tombstones in `base`.
    removed: usize,
    /// Live keys: base minus tombstones plus overlay.
    live: usize,
    scope_sets: Interner,
    tiers: Interner,
    /// Limits and owners of the keys flagged `FLAG_EXTRAS`, by prefix.
    extras: HashMap<[u8; 16], Extras>,
}

/// A decoded feed body.
pub enum Update {
    /// A whole new table (boxed: a table is much larger than a delta).
    Snapshot(Box<KeyTable>),
    /// Changes to apply to the current table.
    Delta(Delta),
}

/// Changes from `base` to `version` of `key_set`, with their strings resolved.
pub struct Delta {
    pub key_set: KeySet,
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

    fn check_dictionary(&self) -> Result<(), FeedError> {
        let n = self.dictionary.len();
        for op in &self.ops {
            if let RawOp::Upsert(e) = op {
                if !e.indices_below(n) {
                    return Err(FeedError::Dictionary);
                }
                check_external_id(&self.dictionary, e)?;
            }
        }
        Ok(())
    }
}

/// Decodes a feed body: a whole snapshot becomes a table, a delta waits to
/// be applied. A snapshot page with more to follow is refused
/// (`FeedError::Tag(3)`): pages go through a [`SnapshotBuilder`].
pub fn decode(bytes: &[u8]) -> Result<Update, FeedError> {
    let (header, reader) = Reader::header(bytes)?;
    if header.more {
        return Err(FeedError::Tag(KIND_PAGE));
    }
    if header.snapshot {
        let mut builder = SnapshotBuilder::new(0);
        builder.add_page(bytes)?;
        builder.finish().map(|t| Update::Snapshot(Box::new(t)))
    } else {
        decode_delta(&header, reader).map(Update::Delta)
    }
}

fn decode_delta(header: &Header, mut reader: Reader<'_>) -> Result<Delta, FeedError> {
    let dictionary = reader.dictionary()?.into_iter().map(Box::from).collect();
    let n = reader.op_count()?;
    let mut ops = Vec::with_capacity((n as usize).min(reader.remaining() / 33));
    for _ in 0..n {
        ops.push(reader.op()?);
    }
    reader.finish()?;
    let delta = Delta {
        key_set: header.key_set,
        base: header.base,
        version: header.version,
        ops,
        dictionary,
    };
    delta.check_dictionary()?;
    Ok(delta)
}

impl KeyTable {
    /// The version of the feed this table reflects.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The key set whose history the version belongs to.
    pub fn key_set(&self) -> KeySet {
        self.key_set
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        self.live
    }

    /// True when the table holds no key.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Heap bytes held by the table (entries with their spare capacity,
    /// directory, overlay and interned strings).
    pub fn memory_bytes(&self) -> usize {
        self.base.capacity() * std::mem::size_of::<Entry>()
            + self.directory.offsets.capacity() * std::mem::size_of::<u32>()
            + self.overlay.allocation_size()
            + self.scope_sets.memory_bytes()
            + self.tiers.memory_bytes()
            + self
                .extras
                .values()
                .map(Extras::memory_bytes)
                .sum::<usize>()
    }

    /// The key with this SHA-256, if the table holds it.
    pub fn get(&self, hash: &[u8; 32]) -> Option<KeyRef<'_>> {
        let prefix = prefix_of(hash);
        let entry = match self.find(&prefix) {
            Some(i) => self.base.get(i).filter(|e| !e.is_removed())?,
            None => self
                .overlay
                .find(overlay_hash(&prefix), |e| e.prefix == prefix)?,
        };
        Some(self.record(entry))
    }

    fn record(&self, entry: &Entry) -> KeyRef<'_> {
        let extras = if entry.flags & FLAG_EXTRAS != 0 {
            self.extras.get(&entry.prefix)
        } else {
            None
        };
        KeyRef {
            key_id: KeyId(entry.key_id),
            org_id: OrgId(entry.org_id),
            expires_at: u64::from(entry.expires_at),
            scopes: self.scope_sets.get(usize::from(entry.scopes)),
            tier: self.tiers.get(usize::from(entry.tier)),
            environment: if entry.flags & FLAG_TEST != 0 {
                Environment::Test
            } else {
                Environment::Live
            },
            status: entry.status(),
            limits: extras.map_or(RateLimits::NONE, |x| x.limits),
            external_id: extras.and_then(|x| x.external_id.as_deref()),
        }
    }

    /// Position in the base of `prefix` (a live entry or a tombstone).
    fn find(&self, prefix: &[u8; 16]) -> Option<usize> {
        let (start, end) = self.directory.range(prefix)?;
        let bucket = self.base.get(start..end)?;
        let i = bucket.binary_search_by(|e| e.prefix.cmp(prefix)).ok()?;
        Some(start + i)
    }

    /// Applies a delta of this table's key set whose base is this table's
    /// version; on error nothing changes.
    pub fn apply(&mut self, delta: &Delta) -> Result<(), FeedError> {
        if delta.key_set != self.key_set {
            return Err(FeedError::KeySet {
                body: delta.key_set,
                have: self.key_set,
            });
        }
        if delta.base != self.version {
            return Err(FeedError::BaseMismatch {
                base: delta.base,
                have: self.version,
            });
        }
        let dictionary: Vec<&str> = delta.dictionary.iter().map(|s| &**s).collect();
        self.check_room(delta, &dictionary)?;
        let mut resolver = Resolver::new(&dictionary);
        for op in &delta.ops {
            match op {
                RawOp::Upsert(raw) => {
                    let (entry, extras) =
                        resolver.entry(raw, &mut self.scope_sets, &mut self.tiers)?;
                    self.upsert(entry, extras);
                }
                RawOp::Remove(hash) => self.remove(&prefix_of(hash)),
            }
            self.merge_if_due();
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

    fn upsert(&mut self, entry: Entry, extras: Option<Extras>) {
        match extras {
            Some(extras) => self.extras.insert(entry.prefix, extras),
            None => self.extras.remove(&entry.prefix),
        };
        if let Some(slot) = self.find(&entry.prefix).and_then(|i| self.base.get_mut(i)) {
            if slot.is_removed() {
                self.removed -= 1;
                self.live += 1;
            }
            *slot = entry;
            return;
        }
        let hash = overlay_hash(&entry.prefix);
        let found = self.overlay.entry(
            hash,
            |e| e.prefix == entry.prefix,
            |e| overlay_hash(&e.prefix),
        );
        match found {
            hashbrown::hash_table::Entry::Occupied(mut slot) => *slot.get_mut() = entry,
            hashbrown::hash_table::Entry::Vacant(slot) => {
                slot.insert(entry);
                self.live += 1;
            }
        }
    }

    fn remove(&mut self, prefix: &[u8; 16]) {
        self.extras.remove(prefix);
        if let Some(slot) = self.find(prefix).and_then(|i| self.base.get_mut(i)) {
            if !slot.is_removed() {
                slot.flags |= FLAG_REMOVED;
                self.removed += 1;
                self.live -= 1;
            }
            return;
        }
        let found = self
            .overlay
            .find_entry(overlay_hash(prefix), |e| e.prefix == *prefix);
        if let Ok(slot) = found {
            slot.remove();
            self.live -= 1;
        }
    }

    /// Merges once overlay keys and tombstones reach `max(MIN_MERGE, base/32)`:
    /// a merge moves the whole base, so it is amortised over that many
    /// changes, and that many new keys fit in a snapshot's slack.
    fn merge_if_due(&mut self) {
        let due = MIN_MERGE.max(self.base.len() / 32);
        if self.overlay.len() + self.removed >= due {
            self.merge();
        }
    }

    /// Folds tombstones and overlay into the base, in place.
    fn merge(&mut self) {
        if self.removed > 0 {
            self.base.retain(|e| !e.is_removed());
            self.removed = 0;
        }
        let mut inserts: Vec<Entry> = std::mem::take(&mut self.overlay).into_iter().collect();
        inserts.sort_unstable_by_key(|e| e.prefix);
        self.make_room(inserts.len());
        let old = self.base.len();
        self.base.resize(old + inserts.len(), Entry::default());
        // From the back: `base[..end]` is the part not moved yet; the new key
        // `j` lands after every old key below it, `j` slots above its place.
        let mut end = old;
        for (j, entry) in inserts.iter().enumerate().rev() {
            let below = self.base.get(..end).unwrap_or_default();
            let at = insertion_point(below, &entry.prefix);
            self.base.copy_within(at..end, at + j + 1);
            if let Some(slot) = self.base.get_mut(at + j) {
                *slot = *entry;
            }
            end = at;
        }
        self.directory.rebuild(&self.base);
    }

    /// Ensures spare capacity for `n` more entries. Normally the snapshot's
    /// 1/32 slack covers it; once the table has outgrown it, the base is
    /// reallocated (a copy: a brief 2x peak) with a new 1/32 slack.
    fn make_room(&mut self, n: usize) {
        if self.base.capacity() - self.base.len() < n {
            self.base.reserve_exact(n + self.base.len() / 32);
        }
    }
}

/// Where `prefix` goes in `sorted` (after every smaller prefix), searched
/// from the end in doubling steps: a merge places its keys from the back, so
/// each one lands shortly below the previous and is found in a few nearby
/// probes, not in a binary search over the whole base (cache misses).
fn insertion_point(sorted: &[Entry], prefix: &[u8; 16]) -> usize {
    let mut step = 1;
    let from = loop {
        let probe = sorted.len().saturating_sub(step);
        if probe == 0 || sorted.get(probe).is_some_and(|e| e.prefix < *prefix) {
            break probe;
        }
        step *= 2;
    };
    let tail = sorted.get(from..).unwrap_or_default();
    from + tail.partition_point(|e| e.prefix < *prefix)
}

/// Where a [`SnapshotBuilder`] stands.
enum Progress {
    /// Waiting for the next page.
    Open,
    /// The last page (`more == false`) came.
    Complete,
    /// A page was refused: the builder only returns this error.
    Failed(FeedError),
}

/// Builds a table from a snapshot's pages (see docs/feed-protocol.md), each
/// appended in place: no second copy of the table is made.
///
/// Pages come in order: hashes strictly ascend within and across pages. Each
/// page may be read at its own version; the table takes the lowest, and the
/// deltas from there bring it forward (a delta carries each changed key's
/// current state, so re-applying a change a later page already holds is
/// harmless). After an error the builder refuses everything.
pub struct SnapshotBuilder {
    table: KeyTable,
    /// Keys announced for the whole snapshot (a hint).
    expected: usize,
    /// Prefix of the last key added.
    last: Option<[u8; 16]>,
    /// Key set of the first page: every page must share it.
    key_set: Option<KeySet>,
    /// Lowest page version so far.
    version: Option<u64>,
    progress: Progress,
}

impl SnapshotBuilder {
    /// A builder for a snapshot of about `expected_keys` keys. The hint sizes
    /// the table once, when the first page arrives (plus 1/32 for later
    /// deltas); it is capped at 4M keys and ignored for a one-page snapshot.
    /// Without one (0), the first page predicts the size. A low hint costs
    /// reallocations (a brief 2x peak) as the pages come.
    pub fn new(expected_keys: usize) -> Self {
        SnapshotBuilder {
            table: KeyTable::default(),
            expected: expected_keys.min(MAX_EXPECTED_KEYS),
            last: None,
            key_set: None,
            version: None,
            progress: Progress::Open,
        }
    }

    /// Adds the next page (or a whole snapshot). Errors: not a snapshot
    /// (`Tag`), a bad body as in [`decode`], keys not strictly above the
    /// previous ones (`Order`, also for a page after the last one), an empty
    /// page before the last (`EmptyPage`), a page of another key set than
    /// the first (`KeySet`).
    pub fn add_page(&mut self, bytes: &[u8]) -> Result<(), FeedError> {
        if matches!(self.progress, Progress::Complete) {
            self.progress = Progress::Failed(FeedError::Order);
        }
        if let Progress::Failed(error) = &self.progress {
            return Err(error.clone());
        }
        let added = self.read_page(bytes);
        if let Err(error) = &added {
            self.progress = Progress::Failed(error.clone());
        }
        added
    }

    /// True once the last page was added.
    pub fn is_complete(&self) -> bool {
        matches!(self.progress, Progress::Complete)
    }

    /// The table, once the last page was added (else `Truncated`, or the
    /// error that stopped the build).
    pub fn finish(self) -> Result<KeyTable, FeedError> {
        match self.progress {
            Progress::Complete => {}
            Progress::Open => return Err(FeedError::Truncated),
            Progress::Failed(error) => return Err(error),
        }
        let mut table = self.table;
        let len = table.base.len();
        // A hint above the real size: give the excess back (in place).
        table.base.shrink_to(len + len / 32);
        table.live = len;
        table.version = self.version.unwrap_or(0);
        table.key_set = self.key_set.unwrap_or_default();
        table.directory.rebuild(&table.base);
        Ok(table)
    }

    fn read_page(&mut self, bytes: &[u8]) -> Result<(), FeedError> {
        let (header, mut reader) = Reader::header(bytes)?;
        if !header.snapshot {
            return Err(FeedError::Tag(KIND_DELTA));
        }
        if let Some(have) = self.key_set.filter(|k| *k != header.key_set) {
            return Err(FeedError::KeySet {
                body: header.key_set,
                have,
            });
        }
        self.key_set = Some(header.key_set);
        let dictionary = reader.dictionary()?;
        let n = reader.op_count()?;
        if header.more && n == 0 {
            return Err(FeedError::EmptyPage);
        }
        self.reserve(
            (n as usize).min(reader.remaining() / UPSERT_BYTES),
            header.more,
        );
        let mut resolver = Resolver::new(&dictionary);
        for _ in 0..n {
            let RawOp::Upsert(raw) = reader.op()? else {
                return Err(FeedError::RemoveInSnapshot);
            };
            let table = &mut self.table;
            let (entry, extras) = resolver.entry(&raw, &mut table.scope_sets, &mut table.tiers)?;
            if self.last.is_some_and(|last| entry.prefix <= last) {
                return Err(FeedError::Order);
            }
            self.last = Some(entry.prefix);
            if let Some(extras) = extras {
                table.extras.insert(entry.prefix, extras);
            }
            table.base.push(entry);
        }
        reader.finish()?;
        if header.more && self.expected == 0 {
            self.size_from_density();
        }
        self.version = Some(
            self.version
                .map_or(header.version, |v| v.min(header.version)),
        );
        if !header.more {
            self.progress = Progress::Complete;
        }
        Ok(())
    }

    /// Without a hint, sizes the table once, after its first page, from how
    /// much of the hash space the keys so far cover: hashes are uniform, so
    /// `n` keys up to prefix `p` predict `n * 2^128 / p` in all (within about
    /// `1/sqrt(n)`: 0.8% for a 16384-key page). The table then grows by
    /// copies (a 2x peak, kept for good by a wasm VM's memory) only when the
    /// prediction was low; the excess is given back by [`Self::finish`], and
    /// pages never touched cost no resident memory.
    fn size_from_density(&mut self) {
        let (Some(last), n) = (self.last, self.table.base.len()) else {
            return;
        };
        if n < MIN_DENSITY_KEYS {
            return;
        }
        let covered = (u128::from_be_bytes(last) as f64 + 1.0) / 2f64.powi(128);
        let predicted = (n as f64 / covered).min(MAX_EXPECTED_KEYS as f64) as usize;
        self.expected = predicted;
        // The snapshot's 1/32 slack plus 1/32 for the prediction's error.
        let want = predicted + predicted / 16;
        let base = &mut self.table.base;
        base.reserve_exact(want.saturating_sub(base.len()));
    }

    /// Makes room for a page of `keys` keys. The first page sizes the table
    /// from the hint (or from itself when it is the only page), with 1/32
    /// slack; later pages only grow it when the hint was low.
    fn reserve(&mut self, keys: usize, more: bool) {
        let base = &mut self.table.base;
        if base.capacity() - base.len() >= keys {
            return;
        }
        if base.capacity() == 0 {
            let total = if more { keys.max(self.expected) } else { keys };
            base.reserve_exact(total + total / 32);
        } else {
            base.reserve(keys);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::{encode_delta, encode_snapshot, encode_snapshot_page, FeedEntry, FeedOp};

    const KS: KeySet = KeySet([7; 16]);

    fn entry(n: u8, scopes: &str, tier: &str) -> FeedEntry {
        FeedEntry {
            hash: [n; 32],
            key_id: KeyId(u64::from(n)),
            org_id: OrgId(7),
            scopes: scopes.into(),
            tier: tier.into(),
            environment: Environment::Test,
            ..FeedEntry::default()
        }
    }

    fn snapshot(version: u64, entries: &[FeedEntry]) -> KeyTable {
        match decode(&encode_snapshot(KS, version, entries)).unwrap() {
            Update::Snapshot(t) => *t,
            Update::Delta(_) => panic!("not a snapshot"),
        }
    }

    fn delta(base: u64, version: u64, ops: &[FeedOp]) -> Delta {
        match decode(&encode_delta(KS, base, version, ops)).unwrap() {
            Update::Delta(d) => d,
            Update::Snapshot(_) => panic!("not a delta"),
        }
    }

    /// A key whose hash spreads over the whole prefix space.
    fn spread(i: u16) -> FeedEntry {
        crate::property_tests::keyed(i, u64::from(i))
    }

    /// Every lookup of `entries` answers like a table built from them alone.
    fn assert_holds(t: &KeyTable, entries: &[FeedEntry]) {
        assert_eq!(t.len(), entries.len());
        for e in entries {
            let r = t.get(&e.hash).unwrap();
            assert_eq!(
                (
                    r.key_id,
                    r.org_id,
                    r.expires_at,
                    r.scopes,
                    r.tier,
                    r.environment
                ),
                (
                    e.key_id,
                    e.org_id,
                    e.expires_at,
                    &*e.scopes,
                    &*e.tier,
                    e.environment
                )
            );
        }
    }

    fn paged(expected: usize, pages: &[(u64, &[FeedEntry])]) -> Result<KeyTable, FeedError> {
        let mut b = SnapshotBuilder::new(expected);
        for (i, (version, entries)) in pages.iter().enumerate() {
            let more = i + 1 < pages.len();
            b.add_page(&encode_snapshot_page(KS, *version, entries, more))?;
        }
        b.finish()
    }

    #[test]
    fn another_key_set_is_refused() {
        let other = KeySet([8; 16]);
        let mut t = snapshot(5, &[entry(1, "a:b", "free")]);
        assert_eq!(t.key_set(), KS);
        let foreign = match decode(&encode_delta(other, 5, 6, &[FeedOp::Remove([1; 32])])) {
            Ok(Update::Delta(d)) => d,
            _ => panic!("not a delta"),
        };
        assert_eq!(
            t.apply(&foreign),
            Err(FeedError::KeySet {
                body: other,
                have: KS
            })
        );
        assert_eq!((t.version(), t.len()), (5, 1), "nothing changed");
        let mut b = SnapshotBuilder::new(2);
        b.add_page(&encode_snapshot_page(
            KS,
            3,
            &[entry(1, "a:b", "free")],
            true,
        ))
        .unwrap();
        let mixed = b.add_page(&encode_snapshot_page(
            other,
            3,
            &[entry(2, "a:b", "free")],
            false,
        ));
        assert!(matches!(mixed, Err(FeedError::KeySet { .. })));
        assert!(b.finish().is_err());
    }

    fn with_extras(n: u8, status: KeyStatus, per_minute: u32, owner: Option<&str>) -> FeedEntry {
        FeedEntry {
            status,
            limits: RateLimits {
                per_minute,
                per_day: 0,
            },
            external_id: owner.map(str::to_string),
            ..entry(n, "a:b", "free")
        }
    }

    fn extras_of(t: &KeyTable, n: u8) -> (KeyStatus, u32, Option<&str>) {
        let r = t.get(&[n; 32]).unwrap();
        (r.status, r.limits.per_minute, r.external_id)
    }

    #[test]
    fn status_limits_and_owners_travel_and_change() {
        let mut t = snapshot(
            1,
            &[
                entry(1, "a:b", "free"),
                with_extras(2, KeyStatus::OrgSuspended, 5, Some("user-2")),
                with_extras(3, KeyStatus::SpendExhausted, 0, None),
            ],
        );
        assert_eq!(extras_of(&t, 1), (KeyStatus::Active, 0, None));
        assert_eq!(
            extras_of(&t, 2),
            (KeyStatus::OrgSuspended, 5, Some("user-2"))
        );
        assert_eq!(extras_of(&t, 3), (KeyStatus::SpendExhausted, 0, None));
        assert_eq!(t.extras.len(), 1, "only the key that has extras");
        let ops = [
            FeedOp::Upsert(with_extras(1, KeyStatus::QuotaExhausted, 9, None)),
            FeedOp::Upsert(entry(2, "a:b", "free")),
            FeedOp::Upsert(with_extras(4, KeyStatus::Active, 0, Some("dev-4"))),
        ];
        t.apply(&delta(1, 2, &ops)).unwrap();
        assert_eq!(extras_of(&t, 1), (KeyStatus::QuotaExhausted, 9, None));
        assert_eq!(extras_of(&t, 2), (KeyStatus::Active, 0, None));
        assert_eq!(extras_of(&t, 4), (KeyStatus::Active, 0, Some("dev-4")));
        t.apply(&delta(2, 3, &[FeedOp::Remove([4; 32])])).unwrap();
        t.merge();
        assert_eq!(t.extras.len(), 1);
        assert_eq!(extras_of(&t, 1), (KeyStatus::QuotaExhausted, 9, None));
        let bad = encode_delta(
            KS,
            3,
            4,
            &[FeedOp::Upsert(with_extras(
                5,
                KeyStatus::Active,
                0,
                Some("a b"),
            ))],
        );
        assert_eq!(decode(&bad).err(), Some(FeedError::ExternalId));
    }

    #[test]
    fn entries_are_forty_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 40);
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
    fn removed_then_restored_keys_count_once() {
        let mut t = snapshot(1, &[entry(1, "a:b", "free")]);
        let ops = [
            FeedOp::Remove([1; 32]),
            FeedOp::Remove([1; 32]),
            FeedOp::Upsert(entry(1, "c:d", "free")),
            FeedOp::Upsert(entry(1, "c:d", "pro")),
            FeedOp::Upsert(entry(2, "a:b", "free")),
            FeedOp::Upsert(entry(2, "a:b", "pro")),
            FeedOp::Remove([2; 32]),
            FeedOp::Remove([2; 32]),
            FeedOp::Upsert(entry(2, "a:b", "free")),
        ];
        t.apply(&delta(1, 2, &ops)).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.get(&[1; 32]).unwrap().tier, "pro");
        assert_eq!(t.get(&[2; 32]).unwrap().tier, "free");
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
    fn merges_keep_lookups_right() {
        let all: Vec<_> = (0..600).map(spread).collect();
        let (kept, added) = all.split_at(300);
        let mut t = snapshot(1, kept);
        let capacity = t.base.capacity();
        // Remove every third kept key, add the rest, one delta per 10 ops.
        let mut ops: Vec<FeedOp> = kept
            .iter()
            .step_by(3)
            .map(|e| FeedOp::Remove(e.hash))
            .collect();
        ops.extend(added.iter().cloned().map(FeedOp::Upsert));
        for chunk in ops.chunks(10) {
            let v = t.version();
            t.apply(&delta(v, v + 1, chunk)).unwrap();
            assert!(t.overlay.len() + t.removed < MIN_MERGE.max(t.base.len() / 32));
        }
        assert!(t.base.capacity() > capacity, "merges grew the base");
        assert!(t.base.windows(2).all(|w| w[0].prefix < w[1].prefix));
        let live: Vec<_> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| *i >= 300 || i % 3 != 0)
            .map(|(_, e)| e.clone())
            .collect();
        assert_holds(&t, &live);
        for e in kept.iter().step_by(3) {
            assert!(t.get(&e.hash).is_none());
        }
        t.merge();
        assert_eq!(
            (t.base.len(), t.overlay.len(), t.removed),
            (live.len(), 0, 0)
        );
        assert_holds(&t, &live);
    }

    #[test]
    fn a_merge_within_the_slack_does_not_reallocate() {
        let all: Vec<_> = (0..2000).map(spread).collect();
        let mut t = snapshot(1, &all[..1900]);
        let capacity = t.base.capacity();
        assert_eq!(capacity, 1900 + 1900 / 32);
        // 1900 / 32 = 59 new keys: exactly the slack, and due for a merge.
        let ops: Vec<_> = all[1900..1959]
            .iter()
            .cloned()
            .map(FeedOp::Upsert)
            .collect();
        t.apply(&delta(1, 2, &ops)).unwrap();
        assert_eq!((t.overlay.len(), t.base.len()), (0, 1959), "merged");
        assert_eq!(t.base.capacity(), capacity);
        assert_holds(&t, &all[..1959]);
    }

    #[test]
    fn insertion_points_match_a_binary_search() {
        let mut t = snapshot(1, &(0..100).map(spread).collect::<Vec<_>>());
        t.base.truncate(37);
        for n in 0..=255u8 {
            let prefix = [n; 16];
            for len in [0, 1, 2, 5, 36, 37] {
                let sorted = &t.base[..len];
                let expected = sorted.partition_point(|e| e.prefix < prefix);
                assert_eq!(insertion_point(sorted, &prefix), expected);
            }
        }
        for (i, e) in t.base.iter().enumerate() {
            assert_eq!(insertion_point(&t.base, &e.prefix), i);
        }
    }

    #[test]
    fn paged_build_equals_whole_snapshot() {
        let all: Vec<_> = (0..1000).map(spread).collect();
        let mut sorted = all.clone();
        sorted.sort_by_key(|e| e.hash);
        let whole = snapshot(4, &all);
        let pages: Vec<(u64, &[FeedEntry])> = sorted.chunks(97).map(|c| (4, c)).collect();
        for expected in [0, 10, 1000, usize::MAX] {
            let t = paged(expected, &pages).unwrap();
            assert_eq!((t.version(), t.len()), (4, 1000));
            assert_eq!(t.base, whole.base);
            assert!(t.base.capacity() <= 1000 + 1000 / 32);
            assert_holds(&t, &all);
        }
    }

    #[test]
    fn without_a_hint_the_first_page_sizes_the_table_once() {
        let all: Vec<_> = (0..60_000).map(spread).collect();
        let mut sorted = all.clone();
        sorted.sort_by_key(|e| e.hash);
        for page_keys in [1024, 4096, 16384] {
            let mut b = SnapshotBuilder::new(0);
            let mut capacities = Vec::new();
            let pages: Vec<_> = sorted.chunks(page_keys).collect();
            for (i, page) in pages.iter().enumerate() {
                let more = i + 1 < pages.len();
                b.add_page(&encode_snapshot_page(KS, 1, page, more))
                    .unwrap();
                capacities.push(b.table.base.capacity());
            }
            // Sized once, after the first page, for every key and the slack.
            assert!(
                capacities.iter().all(|&c| c == capacities[0]),
                "{page_keys}"
            );
            let first = capacities[0];
            assert!(first >= 60_000 + 60_000 / 32, "{page_keys}: {first}");
            assert!(first <= 60_000 + 60_000 / 8, "{page_keys}: {first}");
            let t = b.finish().unwrap();
            assert!(t.base.capacity() <= 60_000 + 60_000 / 32);
            assert_holds(&t, &all);
        }
        // A small first page predicts nothing: the table grows as pages come.
        let mut b = SnapshotBuilder::new(0);
        b.add_page(&encode_snapshot_page(KS, 1, &sorted[..100], true))
            .unwrap();
        assert!(b.table.base.capacity() < 200);
    }

    #[test]
    fn version_is_the_lowest_page_version() {
        let all: Vec<_> = (0..30u8).map(|n| entry(n, "a:b", "free")).collect();
        let t = paged(30, &[(9, &all[..10]), (7, &all[10..20]), (8, &all[20..])]).unwrap();
        assert_eq!((t.version(), t.len()), (7, 30));
    }

    #[test]
    fn pages_out_of_order_are_refused() {
        let e = |n| entry(n, "a:b", "free");
        let overlap = paged(0, &[(1, &[e(1), e(3)]), (1, &[e(3), e(4)])]);
        assert_eq!(overlap.err(), Some(FeedError::Order));
        let backwards = paged(0, &[(1, &[e(5)]), (1, &[e(4)])]);
        assert_eq!(backwards.err(), Some(FeedError::Order));
        let duplicate = decode(&encode_snapshot(KS, 1, &[e(2), e(2)]));
        assert_eq!(duplicate.err(), Some(FeedError::Order));
        // Swap the two (68-byte) ops of a sorted body.
        let mut unsorted = encode_snapshot(KS, 1, &[e(1), e(2)]);
        let ops = unsorted.len() - 2 * UPSERT_BYTES;
        let (first, second) = unsorted[ops..].split_at_mut(UPSERT_BYTES);
        first.swap_with_slice(second);
        assert_eq!(decode(&unsorted).err(), Some(FeedError::Order));
    }

    #[test]
    fn a_page_after_the_last_one_breaks_the_build() {
        let mut b = SnapshotBuilder::new(2);
        b.add_page(&encode_snapshot_page(
            KS,
            1,
            &[entry(1, "a:b", "free")],
            false,
        ))
        .unwrap();
        assert!(b.is_complete());
        let late = encode_snapshot_page(KS, 1, &[entry(2, "a:b", "free")], false);
        assert_eq!(b.add_page(&late), Err(FeedError::Order));
        assert!(!b.is_complete());
        assert_eq!(b.add_page(&late), Err(FeedError::Order));
        assert_eq!(b.finish().err(), Some(FeedError::Order));
    }

    #[test]
    fn a_failed_build_refuses_everything_after() {
        let mut b = SnapshotBuilder::new(2);
        assert_eq!(b.add_page(crate::feed::MAGIC), Err(FeedError::Truncated));
        let good = encode_snapshot_page(KS, 1, &[entry(1, "a:b", "free")], false);
        assert_eq!(b.add_page(&good), Err(FeedError::Truncated));
        assert_eq!(b.finish().err(), Some(FeedError::Truncated));
        let mut b = SnapshotBuilder::new(2);
        assert_eq!(
            b.add_page(&encode_delta(KS, 0, 1, &[])),
            Err(FeedError::Tag(KIND_DELTA))
        );
        assert_eq!(
            SnapshotBuilder::new(1).add_page(&encode_snapshot_page(KS, 1, &[], true)),
            Err(FeedError::EmptyPage)
        );
    }

    #[test]
    fn a_build_without_its_last_page_is_truncated() {
        assert_eq!(
            SnapshotBuilder::new(0).finish().err(),
            Some(FeedError::Truncated)
        );
        let mut b = SnapshotBuilder::new(2);
        b.add_page(&encode_snapshot_page(
            KS,
            1,
            &[entry(1, "a:b", "free")],
            true,
        ))
        .unwrap();
        assert!(!b.is_complete());
        assert_eq!(b.finish().err(), Some(FeedError::Truncated));
    }

    #[test]
    fn decode_refuses_a_page_with_more_to_follow() {
        let page = encode_snapshot_page(KS, 1, &[entry(1, "a:b", "free")], true);
        assert_eq!(decode(&page).err(), Some(FeedError::Tag(3)));
        let empty = snapshot(3, &[]);
        assert_eq!((empty.version(), empty.len()), (3, 0));
        assert!(empty.is_empty() && empty.get(&[0; 32]).is_none());
    }

    #[test]
    fn keys_match_on_the_first_sixteen_bytes() {
        let t = snapshot(1, &[entry(1, "a:b", "free")]);
        let mut other = [1u8; 32];
        other[16..].fill(9);
        assert!(t.get(&other).is_some());
        other[15] = 9;
        assert!(t.get(&other).is_none());
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
    fn delta_overflowing_the_tiers_is_refused_whole() {
        let mut t = snapshot(1, &[entry(1, "a:b", "free")]);
        let ops: Vec<_> = (0..=255u8)
            .map(|n| FeedOp::Upsert(entry(n, "a:b", &format!("tier{n}"))))
            .chain([FeedOp::Remove([1; 32])])
            .collect();
        assert_eq!(
            t.apply(&delta(1, 2, &ops)).err(),
            Some(FeedError::Dictionary)
        );
        assert_eq!((t.version(), t.len()), (1, 1));
        assert_eq!(t.get(&[1; 32]).unwrap().tier, "free");
        assert!(t.get(&[2; 32]).is_none());
    }

    #[test]
    fn garbage_is_an_error() {
        let good = encode_snapshot(KS, 3, &[entry(1, "a:b", "free")]);
        assert!(matches!(decode(b""), Err(FeedError::Magic)));
        for old in [b"KGT1xxxxxxxxxxxxxxxxxx", b"KGT2xxxxxxxxxxxxxxxxxx"] {
            assert!(matches!(decode(old), Err(FeedError::Magic)));
        }
        for cut in 0..good.len() {
            assert!(
                decode(&good[..cut]).is_err(),
                "prefix of {cut} bytes decoded"
            );
        }
        let mut long = good.clone();
        long.push(0);
        assert!(decode(&long).is_err());
        let mut remove_in_snapshot = encode_delta(KS, 0, 1, &[FeedOp::Remove([1; 32])]);
        remove_in_snapshot[4] = 1;
        assert!(matches!(
            decode(&remove_in_snapshot),
            Err(FeedError::RemoveInSnapshot)
        ));
    }

    #[test]
    fn memory_is_small_per_key() {
        // Keys without own limits or owner: the 40-byte entry and nothing more.
        let plain = |i| FeedEntry {
            limits: RateLimits::NONE,
            external_id: None,
            ..spread(i)
        };
        let entries: Vec<_> = (0..4096).map(plain).collect();
        let t = snapshot(1, &entries);
        // 40 B entries, 1/32 slack, a 4 B offset per 8-16 keys, 8 strings.
        assert!(
            t.memory_bytes() < 4096 * 42 + 8 * 100,
            "{}",
            t.memory_bytes()
        );
    }
}
