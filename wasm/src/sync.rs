//! One key table feed per Envoy process, shared by every VM through shared data.
//!
//! Envoy runs one VM per worker thread; they share a process-wide key/value
//! store ("shared data", per `vm_id`) with compare-and-swap. Pure logic over a
//! small [`Store`] trait, so it is unit-tested natively:
//!
//! - **lease** (`<ns>lease` = `"<owner> <deadline ms>"`): the VM holding it is
//!   the only one that fetches from the control plane. It is taken and renewed
//!   by CAS only; a missing key is first created as the neutral `"- 0"` (the
//!   only non-CAS write, which can at worst revoke a claim, never add a second
//!   owner). A holder that goes away stops renewing and another VM takes over
//!   once the deadline passes.
//! - **head** (`<ns>head`): current version, version of the stored snapshot,
//!   last successful contact with the control plane, and chain statistics.
//! - **snapshot** (`<ns>snapshot`): the last snapshot body, as received.
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

use keygate::feed::{FeedError, Reader};
use keygate::table::{self, KeyTable, Update};

/// Number of delta slots (keys are reused modulo this).
pub const RING: u64 = 1024;
/// Longest chain before the leader asks for a fresh snapshot.
pub const MAX_CHAIN: u32 = 256;
/// Delta bytes always tolerated before compaction, whatever the snapshot size.
const MIN_CHAIN_BYTES: u64 = 1 << 20;
/// Value of a lease nobody holds.
const NEUTRAL_LEASE: &[u8] = b"- 0";

/// The process-wide shared data, as the sync logic needs it.
pub trait Store {
    /// The value (empty when absent) and its CAS token (`None` when absent).
    fn get(&self, key: &str) -> (Vec<u8>, Option<u32>);
    /// Writes `value`; with `cas`, only if the key was not written since. True on success.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool;
}

/// The shared-data keys of one feed.
#[derive(Debug, Clone)]
pub struct Keys {
    lease: String,
    head: String,
    snapshot: String,
    seq: String,
    resync: String,
    delta: String,
}

impl Keys {
    /// Keys under `namespace` (one per feed, so two feeds in one VM id never mix).
    pub fn new(namespace: &str) -> Keys {
        let key = |name: &str| format!("keygate:{namespace}:{name}");
        Keys {
            lease: key("lease"),
            head: key("head"),
            snapshot: key("snapshot"),
            seq: key("seq"),
            resync: key("resync"),
            delta: key("delta."),
        }
    }

    fn delta(&self, base: u64) -> String {
        format!("{}{}", self.delta, base % RING)
    }
}

/// What the head says about the shared table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Head {
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
    /// Size of the stored snapshot.
    pub snapshot_bytes: u64,
}

impl Head {
    fn encode(&self) -> String {
        format!(
            "kgh1 {} {} {} {} {} {}",
            self.version,
            self.snapshot_version,
            self.contact_ms,
            self.chain_len,
            self.chain_bytes,
            self.snapshot_bytes
        )
    }

    fn parse(bytes: &[u8]) -> Option<Head> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut words = text.split(' ');
        if words.next()? != "kgh1" {
            return None;
        }
        let mut next = || words.next()?.parse::<u64>().ok();
        let head = Head {
            version: next()?,
            snapshot_version: next()?,
            contact_ms: next()?,
            chain_len: u32::try_from(next()?).ok()?,
            chain_bytes: next()?,
            snapshot_bytes: next()?,
        };
        words.next().is_none().then_some(head)
    }

    /// True when the chain has grown enough that a fresh snapshot is cheaper.
    pub fn wants_compaction(&self) -> bool {
        self.chain_len >= MAX_CHAIN || self.chain_bytes > self.snapshot_bytes.max(MIN_CHAIN_BYTES)
    }
}

/// Reads the head; `None` before any table was published (or if it is garbage).
pub fn read_head(store: &impl Store, keys: &Keys) -> Option<Head> {
    Head::parse(&store.get(&keys.head).0)
}

fn write_head(store: &impl Store, keys: &Keys, head: &Head) {
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
    pub fn new(store: &impl Store, keys: &Keys, seed: u64, ttl_ms: u64) -> Lease {
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

    /// Takes or renews the lease; true while this VM holds it.
    pub fn tick(&self, store: &impl Store, keys: &Keys, now_ms: u64) -> bool {
        let (mut value, mut cas) = store.get(&keys.lease);
        if cas.is_none() {
            store.set(&keys.lease, NEUTRAL_LEASE, None);
            (value, cas) = store.get(&keys.lease);
            if cas.is_none() {
                return false;
            }
        }
        let (owner, deadline) = parse_lease(&value).unwrap_or(("", 0));
        if owner != self.owner && deadline > now_ms {
            return false;
        }
        let claim = format!("{} {}", self.owner, now_ms.saturating_add(self.ttl_ms));
        store.set(&keys.lease, claim.as_bytes(), cas)
    }

    /// Gives the lease up (the VM is going away) so another VM takes over at once.
    pub fn release(&self, store: &impl Store, keys: &Keys) {
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

/// The leader's record of a successful answer without change (304).
pub fn publish_contact(store: &impl Store, keys: &Keys, now_ms: u64) {
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

/// Publishes a snapshot body at `version` and clears the previous chain.
pub fn publish_snapshot(store: &impl Store, keys: &Keys, bytes: &[u8], version: u64, now_ms: u64) {
    let old = read_head(store, keys);
    store.set(&keys.snapshot, bytes, None);
    let head = Head {
        version,
        snapshot_version: version,
        contact_ms: now_ms,
        chain_len: 0,
        chain_bytes: 0,
        snapshot_bytes: bytes.len() as u64,
    };
    write_head(store, keys, &head);
    if let Some(old) = old {
        clear_chain(store, keys, old.snapshot_version, old.version);
    }
}

/// Empties the delta slots of the chain `from..to` (bounded memory).
fn clear_chain(store: &impl Store, keys: &Keys, from: u64, to: u64) {
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

/// Publishes a delta body `base -> version` after the current head and
/// returns the new head. `None` when it cannot extend the shared chain (the
/// head is elsewhere or the slot is still in use): the leader should then
/// fetch a snapshot.
pub fn publish_delta(
    store: &impl Store,
    keys: &Keys,
    bytes: &[u8],
    base: u64,
    version: u64,
    now_ms: u64,
) -> Option<Head> {
    let head = read_head(store, keys)?;
    if head.version != base || version <= base {
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
    store: &impl Store,
    keys: &Keys,
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

fn advance(store: &impl Store, keys: &Keys, head: &Head, table: &mut Option<KeyTable>) -> Synced {
    let local = table.as_ref().map(KeyTable::version);
    if local == Some(head.version) {
        return Synced::Unchanged;
    }
    if let Some(t) = table.as_mut() {
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
    let Some(mut snapshot) = load_snapshot(store, keys) else {
        return Synced::Stuck;
    };
    if local == Some(snapshot.version()) {
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
pub fn take_resync(store: &impl Store, keys: &Keys) -> bool {
    let (value, cas) = store.get(&keys.resync);
    value == b"1" && store.set(&keys.resync, b"0", cas)
}

fn load_snapshot(store: &impl Store, keys: &Keys) -> Option<KeyTable> {
    match table::decode(&store.get(&keys.snapshot).0) {
        Ok(Update::Snapshot(t)) => Some(t),
        _ => None,
    }
}

/// Applies stored deltas until `table` reaches `target` (or passes it).
fn follow_chain(
    store: &impl Store,
    keys: &Keys,
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
