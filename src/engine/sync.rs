//! One key table feed per proxy process, shared by its members through a store.
//!
//! The members are the wasm adapter's VMs: Envoy runs one per worker thread
//! (plus one on the main thread); they share a process-wide key/value store
//! ("shared data", per `vm_id`) with compare-and-swap. Pure logic over the
//! [`SharedData`] trait and the value names of [`SharedKeys`], so it is
//! unit-tested natively:
//!
//! - **lease** (`<ns>lease` = `"<owner> <deadline ms>"`): the VM holding it is
//!   the only one that fetches from the control plane. It is taken and renewed
//!   by CAS only; a missing key is first created as the neutral `"- 0"` (the
//!   only non-CAS write, which can at worst revoke a claim, never add a second
//!   owner). A holder that goes away stops renewing and another VM takes over
//!   once the deadline passes.
//! - **head** (`<ns>head`): the key set and current version, the stored
//!   snapshot (version, generation, pages, keys), last successful contact
//!   with the control plane, and chain statistics. Versions only count
//!   within one key set: a table of another key set than the head's is
//!   replaced by the head's snapshot, never brought forward by its deltas,
//!   and a delta of another key set never extends the chain.
//! - **client** (`<ns>client`): the id this Envoy's fetch stream gives the
//!   control plane (`client=`), the same whichever VM leads.
//! - **snapshot pages** (`<ns>snap.<generation>.<i>`): the pages of the last
//!   snapshot, as received (about 1 MiB each, so no VM ever copies a whole
//!   table's worth of bytes at once). A snapshot bigger than
//!   `feed.keep_snapshot_bytes` is emptied by the leader once every following
//!   VM holds its version (see [`crate::engine::followers`]); a VM that needs it
//!   later asks for a fresh snapshot.
//! - **deltas** (`<ns>delta.<base % RING>`): delta bodies from the snapshot
//!   version to the head version, each found under the slot of its base.
//!
//! The leader writes data before the head that points at it, so a follower
//! never sees a head it cannot reach. Followers apply the chain from their
//! version, or load the snapshot when the chain is broken (a slot cleared or
//! reused); a follower that cannot catch up sets `<ns>resync` and the leader
//! fetches a fresh snapshot. The chain is bounded: past [`MAX_CHAIN`] deltas (or more delta
//! bytes than the snapshot) the leader asks the control plane for a fresh
//! snapshot and clears the old slots.

use crate::engine::shared::{SharedData, SharedKeys, RING};
use crate::feed::{FeedError, KeySet, PageSummary, Reader};
use crate::table::{self, KeyTable, SnapshotBuilder, Update};

/// Longest chain before the leader asks for a fresh snapshot.
pub const MAX_CHAIN: u32 = 256;
/// Delta bytes always tolerated before compaction, whatever the snapshot size.
const MIN_CHAIN_BYTES: u64 = 1 << 20;
/// Value of a lease nobody holds.
const NEUTRAL_LEASE: &[u8] = b"- 0";

/// What the head says about the shared table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Head {
    /// The key set whose history the versions belong to.
    pub key_set: KeySet,
    /// Version of the newest table.
    pub version: u64,
    /// Version of the stored snapshot (the chain starts there).
    pub snapshot_version: u64,
    /// Unix ms of the last successful answer from the control plane.
    pub contact_ms: u64,
    /// Deltas stored after the snapshot.
    pub chain_len: u32,
    /// Their total size.
    pub chain_bytes: u64,
    /// Size of the stored snapshot (all pages).
    pub snapshot_bytes: u64,
    /// Generation of the stored snapshot (names its pages).
    pub generation: u64,
    /// Its pages.
    pub pages: u32,
    /// Its keys.
    pub snapshot_keys: u64,
    /// Unix ms when it was published.
    pub published_ms: u64,
    /// True once its pages were emptied (every follower held it).
    pub released: bool,
}

impl Head {
    fn encode(&self) -> String {
        format!(
            "kgh3 {} {} {} {} {} {} {} {} {} {} {} {}",
            self.key_set.to_hex(),
            self.version,
            self.snapshot_version,
            self.contact_ms,
            self.chain_len,
            self.chain_bytes,
            self.snapshot_bytes,
            self.generation,
            self.pages,
            self.snapshot_keys,
            self.published_ms,
            u8::from(self.released)
        )
    }

    fn parse(bytes: &[u8]) -> Option<Head> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut words = text.split(' ');
        if words.next()? != "kgh3" {
            return None;
        }
        let key_set = KeySet::from_hex(words.next()?)?;
        let mut next = || words.next()?.parse::<u64>().ok();
        let head = Head {
            key_set,
            version: next()?,
            snapshot_version: next()?,
            contact_ms: next()?,
            chain_len: u32::try_from(next()?).ok()?,
            chain_bytes: next()?,
            snapshot_bytes: next()?,
            generation: next()?,
            pages: u32::try_from(next()?).ok()?,
            snapshot_keys: next()?,
            published_ms: next()?,
            released: match next()? {
                0 => false,
                1 => true,
                _ => return None,
            },
        };
        words.next().is_none().then_some(head)
    }

    /// True when the chain has grown enough that a fresh snapshot is cheaper.
    pub fn wants_compaction(&self) -> bool {
        self.chain_len >= MAX_CHAIN || self.chain_bytes > self.snapshot_bytes.max(MIN_CHAIN_BYTES)
    }
}

/// Reads the head; `None` before any table was published (or if it is garbage).
pub fn read_head(store: &impl SharedData, keys: &SharedKeys) -> Option<Head> {
    Head::parse(&store.get(&keys.head).0)
}

fn write_head(store: &impl SharedData, keys: &SharedKeys, head: &Head) {
    store.set(&keys.head, head.encode().as_bytes(), None);
}

/// This VM's claim on the fetch lease.
#[derive(Debug, Clone)]
pub struct Lease {
    owner: String,
    ttl_ms: u64,
}

impl Lease {
    /// A claimant with an id unique in the process: `seed` (e.g. clock nanos)
    /// plus a sequence number taken by CAS.
    pub fn new(store: &impl SharedData, keys: &SharedKeys, seed: u64, ttl_ms: u64) -> Lease {
        let mut seq = 0;
        for _ in 0..16 {
            let (value, cas) = store.get(&keys.seq);
            seq = parse_u64(&value).unwrap_or(0).wrapping_add(1);
            if store.set(&keys.seq, seq.to_string().as_bytes(), cas) {
                break;
            }
        }
        Lease {
            owner: format!("{seed:x}.{seq}"),
            ttl_ms,
        }
    }

    /// Renews the lease, or takes it when it is free and `may_claim()` (only
    /// asked then); true while this VM holds it.
    pub fn tick(
        &self,
        store: &impl SharedData,
        keys: &SharedKeys,
        now_ms: u64,
        may_claim: impl FnOnce() -> bool,
    ) -> bool {
        let (mut value, mut cas) = store.get(&keys.lease);
        if cas.is_none() {
            store.set(&keys.lease, NEUTRAL_LEASE, None);
            (value, cas) = store.get(&keys.lease);
            if cas.is_none() {
                return false;
            }
        }
        let (owner, deadline) = parse_lease(&value).unwrap_or(("", 0));
        if owner != self.owner && (deadline > now_ms || !may_claim()) {
            return false;
        }
        let claim = format!("{} {}", self.owner, now_ms.saturating_add(self.ttl_ms));
        store.set(&keys.lease, claim.as_bytes(), cas)
    }

    /// This claimant's id, unique in the process.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Gives the lease up (the VM is going away) so another VM takes over at once.
    pub fn release(&self, store: &impl SharedData, keys: &SharedKeys) {
        let (value, cas) = store.get(&keys.lease);
        if cas.is_some() && parse_lease(&value).is_some_and(|(owner, _)| owner == self.owner) {
            store.set(&keys.lease, NEUTRAL_LEASE, cas);
        }
    }
}

fn parse_u64(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

fn parse_lease(bytes: &[u8]) -> Option<(&str, u64)> {
    let (owner, deadline) = std::str::from_utf8(bytes).ok()?.split_once(' ')?;
    Some((owner, deadline.parse().ok()?))
}

/// The id of this Envoy's fetch stream: the one in shared data, or
/// `fresh` (e.g. clock nanos mixed with the root id, in hex) stored there
/// when there is none yet. Only the leader asks, so two VMs never race for
/// it in practice; if they did, both read back the one that stayed.
pub fn client_id(store: &impl SharedData, keys: &SharedKeys, fresh: &str) -> String {
    let (value, _) = store.get(&keys.client);
    if let Some(id) = std::str::from_utf8(&value).ok().filter(|v| !v.is_empty()) {
        return id.to_string();
    }
    store.set(&keys.client, fresh.as_bytes(), None);
    let (value, _) = store.get(&keys.client);
    String::from_utf8(value)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| fresh.to_string())
}

/// The leader's record of a successful answer without change (304).
pub fn publish_contact(store: &impl SharedData, keys: &SharedKeys, now_ms: u64) {
    if let Some(head) = read_head(store, keys) {
        write_head(
            store,
            keys,
            &Head {
                contact_ms: now_ms,
                ..head
            },
        );
    }
}

/// A snapshot the leader stores page by page; the head points at it only
/// once the last page is in ([`publish_snapshot`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PagedSnapshot {
    /// The key set of its first page: every page must share it.
    key_set: Option<KeySet>,
    generation: u64,
    pages: u32,
    keys: u64,
    bytes: u64,
    /// The lowest version a page was read at: the snapshot's version.
    version: u64,
    after: Option<[u8; 32]>,
}

impl PagedSnapshot {
    /// Starts a snapshot in a generation the head does not use.
    pub fn start(store: &impl SharedData, keys: &SharedKeys) -> PagedSnapshot {
        let generation = read_head(store, keys).map_or(1, |h| h.generation.wrapping_add(1));
        PagedSnapshot {
            key_set: None,
            generation,
            pages: 0,
            keys: 0,
            bytes: 0,
            version: u64::MAX,
            after: None,
        }
    }

    /// Hash of the last key stored: the next page starts after it.
    pub fn after(&self) -> Option<&[u8; 32]> {
        self.after.as_ref()
    }

    /// The key set of the pages stored so far (`None` before the first).
    pub fn key_set(&self) -> Option<KeySet> {
        self.key_set
    }

    /// Pages stored so far.
    pub fn pages(&self) -> u32 {
        self.pages
    }

    /// Keys stored so far.
    pub fn keys(&self) -> u64 {
        self.keys
    }

    /// The snapshot's version: the lowest of its pages'.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Stores a page checked by `crate::feed::check_snapshot_page`, of
    /// the key set of the pages before it (see [`PagedSnapshot::key_set`]).
    pub fn add_page(
        &mut self,
        store: &impl SharedData,
        keys: &SharedKeys,
        body: &[u8],
        page: &PageSummary,
    ) {
        store.set(&keys.page(self.generation, self.pages), body, None);
        self.key_set = Some(page.key_set);
        self.pages = self.pages.saturating_add(1);
        self.keys = self.keys.saturating_add(page.keys as u64);
        self.bytes = self.bytes.saturating_add(body.len() as u64);
        self.version = self.version.min(page.version);
        self.after = page.last_hash.or(self.after);
    }

    /// Empties the pages of an unfinished snapshot.
    pub fn abandon(&self, store: &impl SharedData, keys: &SharedKeys) {
        clear_pages(store, keys, self.generation, self.pages);
    }
}

fn clear_pages(store: &impl SharedData, keys: &SharedKeys, generation: u64, pages: u32) {
    for i in 0..pages {
        store.set(&keys.page(generation, i), &[], None);
    }
}

/// Points the head at a complete snapshot and clears the previous one and
/// its chain.
pub fn publish_snapshot(
    store: &impl SharedData,
    keys: &SharedKeys,
    snapshot: &PagedSnapshot,
    now_ms: u64,
) {
    let old = read_head(store, keys);
    let head = Head {
        key_set: snapshot.key_set.unwrap_or_default(),
        version: snapshot.version,
        snapshot_version: snapshot.version,
        contact_ms: now_ms,
        chain_len: 0,
        chain_bytes: 0,
        snapshot_bytes: snapshot.bytes,
        generation: snapshot.generation,
        pages: snapshot.pages,
        snapshot_keys: snapshot.keys,
        published_ms: now_ms,
        released: false,
    };
    write_head(store, keys, &head);
    if let Some(old) = old {
        if old.generation != snapshot.generation {
            clear_pages(store, keys, old.generation, old.pages);
        }
        clear_chain(store, keys, old.snapshot_version, old.version);
    }
}

/// When to let the snapshot pages go.
#[derive(Debug, Clone, Copy)]
pub struct Release {
    /// Not before this long after publication.
    pub hold_ms: u64,
    /// Never for a snapshot of at most this many bytes.
    pub keep_bytes: u64,
}

/// Empties the snapshot's pages once every follower holds its version or
/// newer, unless `release` says to keep them; true when it did.
pub fn release_snapshot(
    store: &impl SharedData,
    keys: &SharedKeys,
    now_ms: u64,
    release: Release,
) -> bool {
    let Some(head) = read_head(store, keys) else {
        return false;
    };
    let due = !head.released
        && head.snapshot_bytes > release.keep_bytes
        && now_ms >= head.published_ms.saturating_add(release.hold_ms);
    if !due || !crate::engine::followers::all_hold(store, keys, head.snapshot_version, now_ms) {
        return false;
    }
    clear_pages(store, keys, head.generation, head.pages);
    write_head(
        store,
        keys,
        &Head {
            released: true,
            ..head
        },
    );
    true
}

/// Empties the delta slots of the chain `from..to` (bounded memory).
fn clear_chain(store: &impl SharedData, keys: &SharedKeys, from: u64, to: u64) {
    let mut version = from;
    for _ in 0..RING {
        if version >= to {
            return;
        }
        let key = keys.delta(version);
        match delta_header(&store.get(&key).0) {
            Some((base, next)) if base == version => {
                store.set(&key, &[], None);
                version = next;
            }
            _ => return,
        }
    }
}

/// Base and version of a stored delta body, if it is one.
fn delta_header(bytes: &[u8]) -> Option<(u64, u64)> {
    let (header, _) = Reader::header(bytes).ok()?;
    (!header.snapshot && header.version > header.base).then_some((header.base, header.version))
}

/// Publishes a delta body after the current head and returns the new head.
/// `None` when it cannot extend the shared chain (not a delta, a delta of
/// another key set or from another version than the head's, or its slot
/// still in use): the leader should then fetch a snapshot.
pub fn publish_delta(
    store: &impl SharedData,
    keys: &SharedKeys,
    bytes: &[u8],
    now_ms: u64,
) -> Option<Head> {
    let (header, _) = Reader::header(bytes).ok().filter(|(h, _)| !h.snapshot)?;
    let (key_set, base, version) = (header.key_set, header.base, header.version);
    let head = read_head(store, keys)?;
    if head.key_set != key_set || head.version != base || version <= base {
        return None;
    }
    let key = keys.delta(base);
    if let Some((used, _)) = delta_header(&store.get(&key).0) {
        if used >= head.snapshot_version && used < head.version {
            return None;
        }
    }
    store.set(&key, bytes, None);
    let head = Head {
        version,
        contact_ms: now_ms,
        chain_len: head.chain_len.saturating_add(1),
        chain_bytes: head.chain_bytes.saturating_add(bytes.len() as u64),
        ..head
    };
    write_head(store, keys, &head);
    Some(head)
}

/// What a follower's catch-up did to its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synced {
    /// Already at the head's version.
    Unchanged,
    /// The table changed; `at_head` is false when the chain broke on the way
    /// (the table is consistent, at an older version).
    Changed { from_snapshot: bool, at_head: bool },
    /// Shared data cannot bring the table forward.
    Stuck,
}

/// Brings `table` to the head's version from shared data, without fetching.
/// When the chain is broken it asks the leader for a fresh snapshot.
pub fn catch_up(
    store: &impl SharedData,
    keys: &SharedKeys,
    head: &Head,
    table: &mut Option<KeyTable>,
) -> Synced {
    let synced = advance(store, keys, head, table);
    if matches!(
        synced,
        Synced::Stuck | Synced::Changed { at_head: false, .. }
    ) {
        store.set(&keys.resync, b"1", None);
    }
    synced
}

fn advance(
    store: &impl SharedData,
    keys: &SharedKeys,
    head: &Head,
    table: &mut Option<KeyTable>,
) -> Synced {
    let local = table.as_ref().map(|t| (t.key_set(), t.version()));
    if local == Some((head.key_set, head.version)) {
        return Synced::Unchanged;
    }
    if let Some(t) = table.as_mut().filter(|t| t.key_set() == head.key_set) {
        if (head.snapshot_version..head.version).contains(&t.version()) {
            // On the chain: the snapshot cannot be newer than where we stand.
            let before = t.version();
            let at_head = follow_chain(store, keys, t, head.version).is_ok();
            return if at_head || t.version() != before {
                Synced::Changed {
                    from_snapshot: false,
                    at_head,
                }
            } else {
                Synced::Stuck
            };
        }
    }
    let Some(mut snapshot) = load_snapshot(store, keys, head) else {
        // A newer snapshot replaced this one while it was read: next tick.
        let moved = read_head(store, keys).is_some_and(|h| h.generation != head.generation);
        return if moved {
            Synced::Unchanged
        } else {
            Synced::Stuck
        };
    };
    if local == Some((snapshot.key_set(), snapshot.version())) {
        return Synced::Stuck;
    }
    let at_head = follow_chain(store, keys, &mut snapshot, head.version).is_ok();
    *table = Some(snapshot);
    Synced::Changed {
        from_snapshot: true,
        at_head,
    }
}

/// True (once) when a follower asked for a fresh snapshot; for the leader.
pub fn take_resync(store: &impl SharedData, keys: &SharedKeys) -> bool {
    let (value, cas) = store.get(&keys.resync);
    value == b"1" && store.set(&keys.resync, b"0", cas)
}

/// Builds the head's snapshot from its pages (`None` if one is missing or bad).
fn load_snapshot(store: &impl SharedData, keys: &SharedKeys, head: &Head) -> Option<KeyTable> {
    if head.released {
        return None;
    }
    let expected = usize::try_from(head.snapshot_keys).unwrap_or(0);
    let mut builder = SnapshotBuilder::new(expected);
    for i in 0..head.pages {
        builder
            .add_page(&store.get(&keys.page(head.generation, i)).0)
            .ok()?;
    }
    builder.finish().ok()
}

/// Applies stored deltas until `table` reaches `target` (or passes it).
fn follow_chain(
    store: &impl SharedData,
    keys: &SharedKeys,
    table: &mut KeyTable,
    target: u64,
) -> Result<(), FeedError> {
    for _ in 0..RING {
        if table.version() >= target {
            return Ok(());
        }
        let delta = match table::decode(&store.get(&keys.delta(table.version())).0)? {
            Update::Delta(d) if d.version > d.base => d,
            _ => return Err(FeedError::Magic),
        };
        table.apply(&delta)?;
    }
    Err(FeedError::Truncated)
}

#[cfg(test)]
#[path = "sync_tests.rs"]
pub(crate) mod tests;
