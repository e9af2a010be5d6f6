//! The leader's fetch loop: answers, failures, resync and pacing.

use super::*;
use crate::engine::shared::SharedKeys;
use crate::engine::sync::read_head;
use crate::engine::sync::tests::{entry, MemStore, KS};
use crate::feed::{encode_delta, encode_snapshot, encode_snapshot_page, FeedOp, KeySet};

const GAP: u64 = 50;
const RETRY: u64 = 1000;

struct Leader {
    store: MemStore,
    keys: SharedKeys,
    fetcher: Fetcher,
    token: u64,
}

impl Leader {
    fn new() -> Leader {
        Leader {
            store: MemStore::default(),
            keys: SharedKeys::new("t"),
            fetcher: Fetcher::new(GAP, RETRY),
            token: 0,
        }
    }

    /// Starts a request at `now` (it must be due) and answers it at once.
    fn exchange(&mut self, now: u64, status: Option<u16>, body: &[u8]) -> Outcome {
        assert!(self.fetcher.due(now), "not due at {now}");
        self.token += 1;
        let ask = self.ask();
        self.fetcher.started(self.token, &ask, now);
        assert!(!self.fetcher.due(now + 100_000), "one request at a time");
        assert!(self.fetcher.finish(self.token));
        self.fetcher
            .on_response(&self.store, &self.keys, status, body, now)
    }

    fn ask(&self) -> Ask {
        self.fetcher
            .ask(read_head(&self.store, &self.keys).as_ref())
    }

    fn since(&self) -> u64 {
        self.ask().since
    }

    /// Version and keys of the shared table, as a follower loads it.
    fn shared(&self) -> (u64, usize) {
        let head = read_head(&self.store, &self.keys).unwrap();
        let mut table = None;
        crate::engine::sync::catch_up(&self.store, &self.keys, &head, &mut table);
        let t = table.unwrap();
        (t.version(), t.len())
    }
}

#[test]
fn snapshot_then_delta_then_not_modified() {
    let mut l = Leader::new();
    assert_eq!(l.since(), 0);
    let snap = encode_snapshot(KS, 5, &[entry(1), entry(2)]);
    assert_eq!(
        l.exchange(0, Some(200), &snap),
        Outcome::Snapshot {
            version: 5,
            keys: 2
        }
    );
    assert_eq!(l.since(), 5);
    assert_eq!(read_head(&l.store, &l.keys).unwrap().version, 5);

    let delta = encode_delta(KS, 5, 6, &[FeedOp::Remove([1; 32])]);
    assert!(!l.fetcher.due(GAP - 1), "paced");
    assert_eq!(
        l.exchange(GAP, Some(200), &delta),
        Outcome::Delta { version: 6, ops: 1 }
    );
    assert_eq!(l.since(), 6);
    assert_eq!(read_head(&l.store, &l.keys).unwrap().version, 6);

    assert_eq!(l.exchange(2 * GAP, Some(304), b""), Outcome::NotModified);
    assert_eq!(read_head(&l.store, &l.keys).unwrap().contact_ms, 2 * GAP);
}

#[test]
fn failures_keep_the_table_and_wait_retry_ms() {
    let mut l = Leader::new();
    l.exchange(0, Some(200), &encode_snapshot(KS, 5, &[entry(1)]));
    let mut now = GAP;
    for (status, body, failure) in [
        (None, &b""[..], Failure::NoResponse),
        (Some(503), b"", Failure::Status(503)),
        (Some(504), b"upstream timeout", Failure::Status(504)),
        (Some(401), b"{}", Failure::Status(401)),
        (Some(200), b"<html>", Failure::Garbage(FeedError::Magic)),
        (Some(200), b"", Failure::Garbage(FeedError::Magic)),
    ] {
        assert_eq!(l.exchange(now, status, body), Outcome::Failed(failure));
        assert!(!l.fetcher.due(now + RETRY - 1));
        now += RETRY;
        assert_eq!(l.shared(), (5, 1), "last good table kept");
        assert_eq!(l.since(), 5);
    }
    // A truncated good body is garbage too.
    let snap = encode_snapshot(KS, 6, &[entry(1), entry(2)]);
    let cut = &snap[..snap.len() - 1];
    assert!(matches!(
        l.exchange(now, Some(200), cut),
        Outcome::Failed(Failure::Garbage(_))
    ));
    assert_eq!(
        l.fetcher.start_failed(now),
        Outcome::Failed(Failure::Dispatch)
    );
    assert!(!l.fetcher.due(now + RETRY - 1) && l.fetcher.due(now + RETRY));
}

#[test]
fn a_delta_that_does_not_fit_asks_for_a_snapshot() {
    let mut l = Leader::new();
    // A delta before any table.
    assert_eq!(
        l.exchange(0, Some(200), &encode_delta(KS, 5, 6, &[])),
        Outcome::Resync {
            base: 5,
            have: None
        }
    );
    assert_eq!(l.since(), 0);
    l.exchange(GAP, Some(200), &encode_snapshot(KS, 5, &[entry(1)]));
    assert_eq!(
        l.exchange(2 * GAP, Some(200), &encode_delta(KS, 4, 6, &[])),
        Outcome::Resync {
            base: 4,
            have: Some(5)
        }
    );
    assert_eq!(l.since(), 0, "snapshot next");
    assert!(l.fetcher.due(3 * GAP), "at once, not after retry_ms");
    // A delta that does not move forward is refused too.
    l.exchange(3 * GAP, Some(200), &encode_snapshot(KS, 5, &[entry(1)]));
    assert!(matches!(
        l.exchange(4 * GAP, Some(200), &encode_delta(KS, 5, 5, &[])),
        Outcome::Resync { .. }
    ));
    assert_eq!(l.shared().0, 5);
}

#[test]
fn long_chains_and_resync_requests_lead_to_a_snapshot() {
    let mut l = Leader::new();
    l.exchange(0, Some(200), &encode_snapshot(KS, 1, &[entry(1)]));
    let mut now = 0;
    for v in 1..u64::from(crate::engine::sync::MAX_CHAIN) {
        now += GAP;
        l.exchange(now, Some(200), &encode_delta(KS, v, v + 1, &[]));
        assert_eq!(l.since(), v + 1);
    }
    now += GAP;
    let v = u64::from(crate::engine::sync::MAX_CHAIN);
    l.exchange(now, Some(200), &encode_delta(KS, v, v + 1, &[]));
    assert_eq!(l.since(), 0, "compaction: a snapshot next");
    now += GAP;
    l.exchange(now, Some(200), &encode_snapshot(KS, v + 1, &[entry(1)]));
    assert_eq!(l.since(), v + 1);
    l.fetcher.request_snapshot();
    assert_eq!(l.since(), 0);
}

#[test]
fn answers_to_other_requests_are_not_ours() {
    let mut f: Fetcher = Fetcher::new(GAP, RETRY);
    f.started(
        7,
        &Ask {
            since: 3,
            after: None,
            key_set: None,
        },
        0,
    );
    assert!(!f.finish(6));
    assert!(!f.due(1_000_000));
    assert!(f.finish(7));
    assert!(!f.finish(7));
}

#[test]
fn a_snapshot_in_pages_is_fetched_back_to_back_and_published_whole() {
    let mut l = Leader::new();
    l.exchange(0, Some(200), &encode_snapshot(KS, 3, &[entry(9)]));
    l.fetcher.request_snapshot();
    assert_eq!(
        l.ask(),
        Ask {
            since: 0,
            after: None,
            key_set: Some(KS),
        }
    );
    let p1 = encode_snapshot_page(KS, 8, &[entry(1), entry(2)], true);
    assert_eq!(
        l.exchange(GAP, Some(200), &p1),
        Outcome::Page { pages: 1, keys: 2 }
    );
    assert_eq!(read_head(&l.store, &l.keys).unwrap().version, 3, "not yet");
    assert_eq!(
        l.ask(),
        Ask {
            since: 0,
            after: Some([2; 32]),
            key_set: Some(KS),
        }
    );
    assert!(l.fetcher.due(GAP), "the next page at once");
    let p2 = encode_snapshot_page(KS, 7, &[entry(3)], false);
    assert_eq!(
        l.exchange(GAP, Some(200), &p2),
        Outcome::Snapshot {
            version: 7,
            keys: 3
        }
    );
    assert_eq!(l.shared(), (7, 3));
    assert_eq!(
        l.ask(),
        Ask {
            since: 7,
            after: None,
            key_set: Some(KS),
        }
    );
}

#[test]
fn a_failed_or_bad_page_starts_the_snapshot_over() {
    let mut l = Leader::new();
    let p1 = encode_snapshot_page(KS, 8, &[entry(1), entry(2)], true);
    l.exchange(0, Some(200), &p1);
    assert_eq!(
        l.exchange(0, None, b""),
        Outcome::Failed(Failure::NoResponse)
    );
    assert_eq!(
        l.ask(),
        Ask {
            since: 0,
            after: None,
            key_set: None,
        }
    );
    l.exchange(RETRY, Some(200), &p1);
    // A page that goes back in hash order.
    let back = encode_snapshot_page(KS, 8, &[entry(1)], false);
    assert_eq!(
        l.exchange(RETRY, Some(200), &back),
        Outcome::Failed(Failure::Garbage(FeedError::Order))
    );
    assert_eq!(
        l.ask(),
        Ask {
            since: 0,
            after: None,
            key_set: None,
        }
    );
    assert!(read_head(&l.store, &l.keys).is_none(), "nothing published");
}

#[test]
fn a_snapshot_wanted_by_a_follower_does_not_wait_for_the_held_long_poll() {
    let mut l = Leader::new();
    l.exchange(0, Some(200), &encode_snapshot(KS, 5, &[entry(1)]));
    // A long-poll is held...
    l.token += 1;
    let held = l.token;
    let ask = l.ask();
    assert_eq!(ask.since, 5);
    l.fetcher.started(held, &ask, GAP);
    assert!(!l.fetcher.due(GAP + 1));
    // ...when a new VM finds no snapshot: the snapshot starts at once.
    l.fetcher.request_snapshot();
    assert!(l.fetcher.due(GAP + 1));
    assert_eq!(
        l.ask(),
        Ask {
            since: 0,
            after: None,
            key_set: Some(KS),
        }
    );
    l.token += 1;
    let snapshot = l.token;
    l.fetcher.started(snapshot, &l.ask(), GAP + 1);
    // Asked again while it is coming: nothing changes.
    l.fetcher.request_snapshot();
    assert!(!l.fetcher.due(GAP + 2));
    // The held long-poll's answer is not ours any more.
    assert!(!l.fetcher.finish(held));
    assert!(l.fetcher.finish(snapshot));
}

/// After a database swap: the control plane's deltas of another key set
/// are refused, and a snapshot of the new key set replaces the table.
#[test]
fn a_delta_of_another_key_set_asks_for_a_snapshot() {
    let b = KeySet([0xbb; 16]);
    let mut l = Leader::new();
    l.exchange(0, Some(200), &encode_snapshot(b, 2, &[entry(1)]));
    assert_eq!((l.ask().since, l.ask().key_set), (2, Some(b)));
    let from_a = encode_delta(KS, 2, 300, &[FeedOp::Upsert(entry(2))]);
    assert_eq!(
        l.exchange(GAP, Some(200), &from_a),
        Outcome::Resync {
            base: 2,
            have: Some(2)
        }
    );
    assert_eq!(l.since(), 0);
    assert_eq!(l.shared(), (2, 1), "B's table stays until A's snapshot");
    l.exchange(2 * GAP, Some(200), &encode_snapshot(KS, 300, &[entry(3)]));
    assert_eq!(l.shared(), (300, 1));
    assert_eq!(l.ask().key_set, Some(KS));
}

#[test]
fn a_page_of_another_key_set_starts_the_snapshot_over() {
    let b = KeySet([0xbb; 16]);
    let mut l = Leader::new();
    let p1 = encode_snapshot_page(KS, 8, &[entry(1), entry(2)], true);
    l.exchange(0, Some(200), &p1);
    assert_eq!(l.ask().key_set, Some(KS));
    let other = encode_snapshot_page(b, 3, &[entry(5)], false);
    assert_eq!(
        l.exchange(0, Some(200), &other),
        Outcome::NewKeySet { key_set: b }
    );
    assert!(l.fetcher.due(0), "the new snapshot starts at once");
    assert_eq!(
        l.ask(),
        Ask {
            since: 0,
            after: None,
            key_set: None
        }
    );
    assert!(read_head(&l.store, &l.keys).is_none(), "nothing published");
    assert_eq!(
        l.exchange(0, Some(200), &other),
        Outcome::Snapshot {
            version: 3,
            keys: 1
        }
    );
    assert_eq!(l.shared(), (3, 1));
}
