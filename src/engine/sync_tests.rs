//! Lease, head and chain logic against an in-memory store with Envoy's CAS rules.

use super::*;
use crate::feed::{
    check_snapshot_page, encode_delta, encode_snapshot, encode_snapshot_page, FeedEntry, FeedOp,
};
use crate::ids::{KeyId, OrgId};
use crate::key::Environment;
use std::cell::RefCell;
use std::collections::HashMap;

/// The key set of the tests' bodies.
pub(crate) const KS: KeySet = KeySet([7; 16]);

/// Envoy's shared data: a CAS token per key; a token on a missing key is ignored.
#[derive(Default)]
pub struct MemStore {
    data: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    next_cas: RefCell<u32>,
}

impl SharedData for MemStore {
    fn get(&self, key: &str) -> (Vec<u8>, Option<u32>) {
        match self.data.borrow().get(key) {
            Some((v, cas)) => (v.clone(), Some(*cas)),
            None => (Vec::new(), None),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        let mut data = self.data.borrow_mut();
        if let (Some(cas), Some((_, current))) = (cas, data.get(key)) {
            if cas != *current {
                return false;
            }
        }
        let mut next = self.next_cas.borrow_mut();
        *next += 1;
        data.insert(key.to_string(), (value.to_vec(), *next));
        true
    }
}

pub fn entry(n: u8) -> FeedEntry {
    FeedEntry {
        hash: [n; 32],
        key_id: KeyId(u64::from(n)),
        org_id: OrgId(1),
        expires_at: 0,
        scopes: "memory:read".into(),
        tier: "free".into(),
        environment: Environment::Live,
        ..FeedEntry::default()
    }
}

/// Publishes `body` (a whole snapshot) as the leader would: one page.
pub fn publish_body(store: &MemStore, k: &SharedKeys, body: &[u8], now: u64) {
    publish_pages(store, k, &[body], now);
}

/// Publishes the pages of one snapshot as the leader would.
pub fn publish_pages(store: &MemStore, k: &SharedKeys, bodies: &[&[u8]], now: u64) {
    let mut snap = PagedSnapshot::start(store, k);
    for body in bodies {
        let page = check_snapshot_page(body, snap.after()).unwrap();
        snap.add_page(store, k, body, &page);
    }
    publish_snapshot(store, k, &snap, now);
}

fn keys() -> SharedKeys {
    SharedKeys::new("cp|auth|/v1/key-table")
}

fn remove(base: u64, version: u64, n: u8) -> Vec<u8> {
    encode_delta(KS, base, version, &[FeedOp::Remove([n; 32])])
}

fn add(base: u64, version: u64, n: u8) -> Vec<u8> {
    encode_delta(KS, base, version, &[FeedOp::Upsert(entry(n))])
}

fn has(table: &Option<KeyTable>, n: u8) -> bool {
    table.as_ref().unwrap().get(&[n; 32]).is_some()
}

#[test]
fn head_round_trip_and_garbage() {
    let head = Head {
        key_set: KS,
        version: 9,
        snapshot_version: 5,
        contact_ms: 1234,
        chain_len: 2,
        chain_bytes: 300,
        snapshot_bytes: 900,
        generation: 3,
        pages: 2,
        snapshot_keys: 40,
        published_ms: 1000,
        released: true,
    };
    assert_eq!(Head::parse(head.encode().as_bytes()), Some(head));
    for bad in [
        &b""[..],
        b"kgh3 07070707070707070707070707070707 1 2",
        b"kgh2 1 2 3 4 5 6 7 8 9 10 1",
        b"kgh3 07070707070707070707070707070707 1 2 3 4 5 6 7 8 9 10 1 12",
        b"kgh3 07070707070707070707070707070707 1 2 3 4 5 6 7 8 9 10 2",
        b"kgh3 0707 1 2 3 4 5 6 7 8 9 10 1",
        b"xxx 07070707070707070707070707070707 1 2 3 4 5 6 7 8 9 10 1",
        b"kgh3 07070707070707070707070707070707 a 2 3 4 5 6 7 8 9 10 1",
    ] {
        assert_eq!(Head::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn one_leader_among_many_and_takeover_after_expiry() {
    let store = MemStore::default();
    let k = keys();
    let vms: Vec<Lease> = (0..4)
        .map(|i| Lease::new(&store, &k, 7, 3000 + i))
        .collect();
    let owners: Vec<&str> = vms.iter().map(|l| l.owner.as_str()).collect();
    let mut unique = owners.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), 4, "same seed, distinct ids: {owners:?}");

    let leaders = |now: u64, alive: &[usize]| -> Vec<usize> {
        alive
            .iter()
            .copied()
            .filter(|&i| vms[i].tick(&store, &k, now, || true))
            .collect()
    };
    assert_eq!(leaders(1000, &[0, 1, 2, 3]), vec![0]);
    for now in (1050..5000).step_by(50) {
        assert_eq!(leaders(now, &[3, 2, 1, 0]), vec![0], "at {now}");
    }
    // VM 0 goes away: nobody takes over before its deadline, one VM after.
    let last_renewal = 4950 + 3000;
    assert!(leaders(last_renewal - 1, &[1, 2, 3]).is_empty());
    let after = leaders(last_renewal, &[2, 1, 3]);
    assert_eq!(after, vec![2]);
    assert_eq!(leaders(last_renewal + 50, &[1, 2, 3]), vec![2]);
}

#[test]
fn released_lease_is_taken_at_once_and_garbage_lease_is_taken() {
    let store = MemStore::default();
    let k = keys();
    let a = Lease::new(&store, &k, 1, 3000);
    let b = Lease::new(&store, &k, 1, 3000);
    assert!(a.tick(&store, &k, 10, || true));
    assert!(!b.tick(&store, &k, 20, || true));
    b.release(&store, &k); // not the owner: no effect
    assert!(!b.tick(&store, &k, 30, || true));
    a.release(&store, &k);
    assert!(b.tick(&store, &k, 40, || true));
    assert!(!a.tick(&store, &k, 50, || true));
    store.set(&k.lease, b"\xff garbage", None);
    assert!(a.tick(&store, &k, 60, || true));
    // Free, but this VM may not claim it: only renewal is allowed.
    a.release(&store, &k);
    assert!(!b.tick(&store, &k, 70, || false));
    assert!(b.tick(&store, &k, 80, || true));
    assert!(b.tick(&store, &k, 90, || false), "renewal");
}

#[test]
fn a_stale_claim_cannot_overwrite_a_newer_one() {
    let store = MemStore::default();
    let k = keys();
    let a = Lease::new(&store, &k, 1, 3000);
    let b = Lease::new(&store, &k, 2, 3000);
    assert!(a.tick(&store, &k, 0, || true));
    // b read the lease when it was expired, then a renewed: b's CAS fails.
    let (_, cas) = store.get(&k.lease);
    assert!(a.tick(&store, &k, 100, || true));
    assert!(!store.set(&k.lease, b"b 99999", cas));
    assert!(!b.tick(&store, &k, 200, || true));
}

#[test]
fn followers_apply_the_chain_and_load_the_snapshot_when_behind() {
    let store = MemStore::default();
    let k = keys();
    let snap = encode_snapshot(KS, 5, &[entry(1), entry(2)]);
    publish_body(&store, &k, &snap, 100);
    let mut early: Option<KeyTable> = None;
    assert_eq!(
        catch_up(&store, &k, &read_head(&store, &k).unwrap(), &mut early),
        Synced::Changed {
            from_snapshot: true,
            at_head: true
        }
    );
    assert!(publish_delta(&store, &k, &remove(5, 6, 1), 200).is_some());
    assert!(publish_delta(&store, &k, &add(6, 9, 3), 300).is_some());
    let head = read_head(&store, &k).unwrap();
    assert_eq!(
        (
            head.version,
            head.snapshot_version,
            head.contact_ms,
            head.chain_len
        ),
        (9, 5, 300, 2)
    );

    // A follower at 5 walks the chain.
    assert_eq!(
        catch_up(&store, &k, &head, &mut early),
        Synced::Changed {
            from_snapshot: false,
            at_head: true
        }
    );
    assert_eq!(early.as_ref().unwrap().version(), 9);
    assert!(!has(&early, 1) && has(&early, 2) && has(&early, 3));
    assert_eq!(catch_up(&store, &k, &head, &mut early), Synced::Unchanged);

    // A new VM loads snapshot + chain.
    let mut fresh = None;
    assert_eq!(
        catch_up(&store, &k, &head, &mut fresh),
        Synced::Changed {
            from_snapshot: true,
            at_head: true
        }
    );
    assert_eq!(fresh.as_ref().unwrap().version(), 9);
    assert!(!has(&fresh, 1) && has(&fresh, 3));
}

#[test]
fn a_new_snapshot_clears_the_old_chain_and_followers_jump_to_it() {
    let store = MemStore::default();
    let k = keys();
    publish_body(&store, &k, &encode_snapshot(KS, 5, &[entry(1)]), 0);
    publish_delta(&store, &k, &add(5, 6, 2), 0).unwrap();
    publish_delta(&store, &k, &add(6, 7, 3), 0).unwrap();
    let mut follower = None;
    catch_up(&store, &k, &read_head(&store, &k).unwrap(), &mut follower);
    assert_eq!(follower.as_ref().unwrap().version(), 7);

    publish_body(&store, &k, &encode_snapshot(KS, 20, &[entry(9)]), 0);
    assert!(store.get(&k.delta(5)).0.is_empty() && store.get(&k.delta(6)).0.is_empty());
    let head = read_head(&store, &k).unwrap();
    assert_eq!(
        (head.version, head.snapshot_version, head.chain_len),
        (20, 20, 0)
    );
    assert_eq!(
        catch_up(&store, &k, &head, &mut follower),
        Synced::Changed {
            from_snapshot: true,
            at_head: true
        }
    );
    assert!(has(&follower, 9) && !has(&follower, 1));

    // The control plane's database was replaced: versions go back; followers follow.
    publish_body(&store, &k, &encode_snapshot(KS, 3, &[entry(4)]), 0);
    catch_up(&store, &k, &read_head(&store, &k).unwrap(), &mut follower);
    assert_eq!(follower.as_ref().unwrap().version(), 3);
}

#[test]
fn a_broken_chain_asks_the_leader_for_a_snapshot_once_per_request() {
    let store = MemStore::default();
    let k = keys();
    publish_body(&store, &k, &encode_snapshot(KS, 5, &[entry(1)]), 0);
    publish_delta(&store, &k, &add(5, 6, 2), 0).unwrap();
    publish_delta(&store, &k, &add(6, 7, 3), 0).unwrap();
    store.set(&k.delta(6), b"garbage", None);
    let head = read_head(&store, &k).unwrap();

    let mut at5 = None;
    assert_eq!(
        catch_up(&store, &k, &head, &mut at5),
        Synced::Changed {
            from_snapshot: true,
            at_head: false
        }
    );
    assert_eq!(
        at5.as_ref().unwrap().version(),
        6,
        "partial progress is kept"
    );
    assert_eq!(catch_up(&store, &k, &head, &mut at5), Synced::Stuck);
    assert!(take_resync(&store, &k));
    assert!(!take_resync(&store, &k));

    // The snapshot is unreadable: nothing loads, and the leader is asked.
    store.set(&k.page(head.generation, 0), b"nope", None);
    let mut none = None;
    assert_eq!(catch_up(&store, &k, &head, &mut none), Synced::Stuck);
    assert!(none.is_none());
    assert!(take_resync(&store, &k));
}

#[test]
fn delta_publication_refuses_to_break_the_chain() {
    let store = MemStore::default();
    let k = keys();
    assert!(
        publish_delta(&store, &k, &add(0, 1, 1), 0).is_none(),
        "no head yet"
    );
    publish_body(&store, &k, &encode_snapshot(KS, 5, &[]), 0);
    assert!(
        publish_delta(&store, &k, &add(4, 6, 1), 0).is_none(),
        "base is not the head"
    );
    assert!(
        publish_delta(&store, &k, &add(5, 5, 1), 0).is_none(),
        "does not move"
    );
    publish_delta(&store, &k, &add(5, 6, 1), 0).unwrap();
    // A delta whose slot (base % RING) still holds a link of the chain.
    let base = 5 + RING;
    publish_delta(&store, &k, &add(6, base, 2), 0).unwrap();
    assert!(publish_delta(&store, &k, &add(base, base + 1, 3), 0).is_none());
}

#[test]
fn compaction_is_wanted_for_long_or_heavy_chains() {
    let head = Head {
        snapshot_bytes: 10,
        ..Head::default()
    };
    assert!(!head.wants_compaction());
    assert!(Head {
        chain_len: MAX_CHAIN,
        ..head
    }
    .wants_compaction());
    assert!(!Head {
        chain_bytes: MIN_CHAIN_BYTES,
        ..head
    }
    .wants_compaction());
    assert!(Head {
        chain_bytes: MIN_CHAIN_BYTES + 1,
        ..head
    }
    .wants_compaction());
    assert!(Head {
        chain_bytes: 3 << 20,
        snapshot_bytes: 2 << 20,
        ..head
    }
    .wants_compaction());
}

#[test]
fn contact_updates_only_the_time() {
    let store = MemStore::default();
    let k = keys();
    publish_contact(&store, &k, 5);
    assert!(read_head(&store, &k).is_none());
    publish_body(&store, &k, &encode_snapshot(KS, 5, &[]), 1);
    publish_contact(&store, &k, 99);
    let head = read_head(&store, &k).unwrap();
    assert_eq!((head.version, head.contact_ms), (5, 99));
}

#[test]
fn a_snapshot_in_pages_loads_at_its_lowest_version_and_the_chain_fixes_it() {
    let store = MemStore::default();
    let k = keys();
    // Pages read at versions 7, 5 and 6; key 2 was revoked at version 6,
    // after page 1 (holding it) was read.
    let p1 = encode_snapshot_page(KS, 7, &[entry(1), entry(2)], true);
    let p2 = encode_snapshot_page(KS, 5, &[entry(3)], true);
    let p3 = encode_snapshot_page(KS, 6, &[entry(4)], false);
    publish_pages(&store, &k, &[&p1, &p2, &p3], 0);
    let head = read_head(&store, &k).unwrap();
    assert_eq!(
        (
            head.version,
            head.snapshot_version,
            head.pages,
            head.snapshot_keys
        ),
        (5, 5, 3, 4)
    );
    publish_delta(&store, &k, &remove(5, 7, 2), 10).unwrap();
    let mut table = None;
    catch_up(&store, &k, &read_head(&store, &k).unwrap(), &mut table);
    let t = table.as_ref().unwrap();
    assert_eq!((t.version(), t.len()), (7, 3));
    assert!(has(&table, 1) && !has(&table, 2) && has(&table, 3) && has(&table, 4));
}

#[test]
fn pages_leave_shared_data_once_every_follower_holds_them() {
    let store = MemStore::default();
    let k = keys();
    use crate::engine::followers::{Announcer, Role};
    let mut announcer = Announcer::new("w.1", 0);
    announcer.announce(&store, &k, Role::Follower(0), 0);
    publish_body(&store, &k, &encode_snapshot(KS, 5, &[entry(1)]), 100);
    let head = read_head(&store, &k).unwrap();
    let release = Release {
        hold_ms: 2000,
        keep_bytes: 0,
    };
    let keep = Release {
        keep_bytes: head.snapshot_bytes,
        ..release
    };
    assert!(
        !release_snapshot(&store, &k, 5000, release),
        "follower at 0"
    );
    let mut table = None;
    catch_up(&store, &k, &head, &mut table);
    announcer.announce(&store, &k, Role::Follower(5), 5000);
    assert!(
        !release_snapshot(&store, &k, 1000, release),
        "too soon after publication"
    );
    assert!(
        !release_snapshot(&store, &k, 5000, keep),
        "small enough to keep"
    );
    assert!(release_snapshot(&store, &k, 5000, release));
    assert!(store.get(&k.page(head.generation, 0)).0.is_empty());
    assert!(read_head(&store, &k).unwrap().released);
    assert!(!release_snapshot(&store, &k, 5001, release), "once");

    // The follower keeps following the chain; a new VM asks for a snapshot.
    publish_delta(&store, &k, &add(5, 6, 2), 5100).unwrap();
    let head = read_head(&store, &k).unwrap();
    assert_eq!(
        catch_up(&store, &k, &head, &mut table),
        Synced::Changed {
            from_snapshot: false,
            at_head: true
        }
    );
    let mut fresh = None;
    assert_eq!(catch_up(&store, &k, &head, &mut fresh), Synced::Stuck);
    assert!(take_resync(&store, &k));
}

#[test]
fn a_snapshot_replaced_while_read_is_retried_not_reported() {
    let store = MemStore::default();
    let k = keys();
    publish_body(&store, &k, &encode_snapshot(KS, 5, &[entry(1)]), 0);
    let old = read_head(&store, &k).unwrap();
    publish_body(&store, &k, &encode_snapshot(KS, 8, &[entry(2)]), 0);
    let mut table = None;
    assert_eq!(catch_up(&store, &k, &old, &mut table), Synced::Unchanged);
    assert!(!take_resync(&store, &k));
    assert!(table.is_none());
}

/// The database swap of issue 10: a table of key set B at version 2 must
/// never take a delta of A from 2, nor count as current at A's version.
#[test]
fn a_table_of_another_key_set_is_replaced_never_brought_forward() {
    let (a, b) = (KS, KeySet([0xbb; 16]));
    let store = MemStore::default();
    let k = keys();
    publish_body(&store, &k, &encode_snapshot(b, 2, &[entry(1)]), 0);
    let mut table = None;
    catch_up(&store, &k, &read_head(&store, &k).unwrap(), &mut table);
    assert_eq!(table.as_ref().unwrap().key_set(), b);

    let a_delta = encode_delta(a, 2, 3, &[FeedOp::Upsert(entry(2))]);
    assert!(
        publish_delta(&store, &k, &a_delta, 0).is_none(),
        "a delta of A never extends B's chain"
    );
    // A's snapshot at the very same version as B's table.
    publish_body(&store, &k, &encode_snapshot(a, 2, &[entry(3)]), 0);
    let head = read_head(&store, &k).unwrap();
    assert_eq!((head.key_set, head.version), (a, 2));
    assert_eq!(
        catch_up(&store, &k, &head, &mut table),
        Synced::Changed {
            from_snapshot: true,
            at_head: true
        }
    );
    let t = table.as_ref().unwrap();
    assert_eq!((t.key_set(), t.version()), (a, 2));
    assert!(!has(&table, 1) && has(&table, 3), "only A's keys");
    assert!(publish_delta(&store, &k, &a_delta, 0).is_some());
    assert_eq!(
        catch_up(&store, &k, &read_head(&store, &k).unwrap(), &mut table),
        Synced::Changed {
            from_snapshot: false,
            at_head: true
        }
    );
    assert!(has(&table, 2) && has(&table, 3));
}

#[test]
fn the_client_id_is_made_once_and_shared() {
    let store = MemStore::default();
    let k = keys();
    assert_eq!(client_id(&store, &k, "first"), "first");
    assert_eq!(client_id(&store, &k, "second"), "first", "another VM leads");
}
