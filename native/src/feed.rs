//! The process's one fetch stream, without host calls (unit-tested).
//!
//! One request at a time, from the main thread, over the feed protocol of
//! docs/feed-protocol.md: `since=<version>&wait=<s>&key_set=<id>&client=<id>`
//! long-polled while the table is current; a snapshot assembled page by
//! page (`since=0&after=<hash>`) straight into a [`SnapshotBuilder`] (no
//! copy of the bodies is kept); a delta applied to a copy of the current
//! table, which then replaces it for every worker at once. A delta that does
//! not fit (another key set, another base) makes the next request ask for a
//! snapshot; a page of another key set than the pages before it starts the
//! snapshot over. Failures keep the table and retry after `retry_ms`;
//! requests other than the next page start at least `min_gap_ms` apart.
//!
//! It shares the engine's vocabulary (`keygate::engine::fetch`'s [`Ask`]
//! and [`Failure`], `keygate::engine::request` for the request itself) but
//! not its `Fetcher`: that one publishes every body to a process-wide store
//! for follower VMs to load (the wasm filter's model, one table per VM).
//! Here the process has exactly one table and no followers, so an answer
//! goes straight into it; keeping the bodies in a store as well would hold
//! a second copy of a big table.

pub use keygate::engine::fetch::{Ask, Failure};
use keygate::feed::{self, FeedError, KeySet, Reader};
use keygate::table::{self, KeyTable, SnapshotBuilder, Update};

/// What one answer did.
pub enum Outcome {
    /// A new table for every worker: a whole snapshot, or the table with a delta.
    Table {
        table: Box<KeyTable>,
        snapshot: bool,
    },
    /// A snapshot page added; more follow.
    Page { pages: u32, keys: usize },
    /// 304: unchanged, and the control plane is reachable.
    NotModified,
    /// A delta that does not apply: a snapshot comes next.
    Resync { base: u64, have: Option<u64> },
    /// A page of another key set than the pages before it: start over.
    NewKeySet { key_set: KeySet },
    /// Nothing usable: the table stays, retry later.
    Failed(Failure),
}

/// A snapshot being assembled.
struct Paging {
    builder: SnapshotBuilder,
    after: Option<[u8; 32]>,
    key_set: KeySet,
    pages: u32,
    keys: usize,
}

/// The fetch loop's state.
pub struct Feed {
    in_flight: Option<u64>,
    last_start_ms: u64,
    not_before_ms: u64,
    /// Unix ms of the last failed answer (or start).
    failed_ms: u64,
    want_snapshot: bool,
    paging: Option<Paging>,
    min_gap_ms: u64,
    retry_ms: u64,
}

impl Feed {
    /// A loop starting requests at most every `min_gap_ms`, retrying after `retry_ms`.
    pub fn new(min_gap_ms: u64, retry_ms: u64) -> Feed {
        Feed {
            in_flight: None,
            last_start_ms: 0,
            not_before_ms: 0,
            failed_ms: 0,
            want_snapshot: false,
            paging: None,
            min_gap_ms,
            retry_ms,
        }
    }

    /// True when a request may start now.
    pub fn due(&self, now_ms: u64) -> bool {
        self.in_flight.is_none() && now_ms >= self.not_before_ms
    }

    /// Retries a failure after at most `cap_ms` (requests wait for a first
    /// table: a control plane that just came up is seen sooner).
    pub fn hurry(&mut self, cap_ms: u64) {
        self.not_before_ms = self
            .not_before_ms
            .min(self.failed_ms.saturating_add(cap_ms));
    }

    /// What the next request asks, given the current table.
    pub fn ask(&self, table: Option<&KeyTable>) -> Ask {
        if let Some(paging) = &self.paging {
            return Ask {
                since: 0,
                after: paging.after,
                key_set: Some(paging.key_set),
            };
        }
        let since = match table {
            Some(t) if !self.want_snapshot => t.version(),
            _ => 0,
        };
        Ask {
            since,
            after: None,
            key_set: table.map(KeyTable::key_set),
        }
    }

    /// Records a request started as `id`.
    pub fn started(&mut self, id: u64, now_ms: u64) {
        self.in_flight = Some(id);
        self.last_start_ms = now_ms;
    }

    /// Records a request that could not start.
    pub fn start_failed(&mut self, now_ms: u64) -> Outcome {
        self.not_before_ms = now_ms.saturating_add(self.retry_ms);
        self.failed_ms = now_ms;
        Outcome::Failed(Failure::Dispatch)
    }

    /// True (once) when `id` is the request in flight: its answer is ours.
    pub fn finish(&mut self, id: u64) -> bool {
        let ours = self.in_flight == Some(id);
        if ours {
            self.in_flight = None;
        }
        ours
    }

    /// Handles the answer to the request in flight (`status` `None`: no
    /// HTTP answer), given the current table.
    pub fn on_answer(
        &mut self,
        table: Option<&KeyTable>,
        status: Option<u16>,
        body: &[u8],
        now_ms: u64,
    ) -> Outcome {
        let outcome = match status {
            Some(200) => self.on_body(table, body),
            Some(304) => Outcome::NotModified,
            Some(s) => Outcome::Failed(Failure::Status(s)),
            None => Outcome::Failed(Failure::NoResponse),
        };
        if matches!(outcome, Outcome::Failed(_)) {
            // A snapshot resumes from its first page.
            self.paging = None;
            self.failed_ms = now_ms;
        }
        self.not_before_ms = match outcome {
            Outcome::Failed(_) => now_ms.saturating_add(self.retry_ms),
            Outcome::Page { .. } | Outcome::NewKeySet { .. } | Outcome::Resync { .. } => now_ms,
            _ => self.last_start_ms.saturating_add(self.min_gap_ms),
        };
        outcome
    }

    fn on_body(&mut self, table: Option<&KeyTable>, body: &[u8]) -> Outcome {
        match Reader::header(body) {
            Err(e) => Outcome::Failed(Failure::Garbage(e)),
            Ok((header, _)) if header.snapshot => self.on_page(body, header.key_set),
            Ok(_) => self.on_delta(table, body),
        }
    }

    fn on_page(&mut self, body: &[u8], key_set: KeySet) -> Outcome {
        let mut paging = self.paging.take().unwrap_or_else(|| Paging {
            builder: SnapshotBuilder::new(0),
            after: None,
            key_set,
            pages: 0,
            keys: 0,
        });
        if paging.key_set != key_set {
            self.want_snapshot = true;
            return Outcome::NewKeySet { key_set };
        }
        let page = match feed::check_snapshot_page(body, paging.after.as_ref()) {
            Ok(page) => page,
            Err(e) => return Outcome::Failed(Failure::Garbage(e)),
        };
        if let Err(e) = paging.builder.add_page(body) {
            return Outcome::Failed(Failure::Garbage(e));
        }
        paging.pages = paging.pages.saturating_add(1);
        paging.keys = paging.keys.saturating_add(page.keys);
        paging.after = page.last_hash.or(paging.after);
        if page.more {
            let outcome = Outcome::Page {
                pages: paging.pages,
                keys: paging.keys,
            };
            self.paging = Some(paging);
            return outcome;
        }
        match paging.builder.finish() {
            Ok(table) => {
                self.want_snapshot = false;
                Outcome::Table {
                    table: Box::new(table),
                    snapshot: true,
                }
            }
            Err(e) => Outcome::Failed(Failure::Garbage(e)),
        }
    }

    fn on_delta(&mut self, table: Option<&KeyTable>, body: &[u8]) -> Outcome {
        let delta = match table::decode(body) {
            Ok(Update::Delta(d)) => d,
            Ok(Update::Snapshot(_)) => return Outcome::Failed(Failure::Garbage(FeedError::Magic)),
            Err(e) => return Outcome::Failed(Failure::Garbage(e)),
        };
        let resync = |feed: &mut Feed| {
            feed.want_snapshot = true;
            Outcome::Resync {
                base: delta.base,
                have: table.map(KeyTable::version),
            }
        };
        let Some(current) = table else {
            return resync(self);
        };
        // Workers keep reading `current` while the copy takes the delta.
        let mut next = current.clone();
        match next.apply(&delta) {
            Ok(()) => Outcome::Table {
                table: Box::new(next),
                snapshot: false,
            },
            Err(_) => resync(self),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate::feed::{encode_delta, encode_snapshot, encode_snapshot_page, FeedEntry, FeedOp};
    use keygate::ids::{KeyId, OrgId};
    use keygate::key::Environment;

    const KS: KeySet = KeySet([7; 16]);

    fn entry(n: u8) -> FeedEntry {
        FeedEntry {
            hash: [n; 32],
            key_id: KeyId(u64::from(n)),
            org_id: OrgId(1),
            expires_at: 0,
            scopes: "a:b".into(),
            tier: "free".into(),
            environment: Environment::Live,
            ..FeedEntry::default()
        }
    }

    fn take_table(outcome: Outcome) -> (KeyTable, bool) {
        match outcome {
            Outcome::Table { table, snapshot } => (*table, snapshot),
            _ => panic!("no table"),
        }
    }

    #[test]
    fn snapshot_then_delta_then_long_poll() {
        let mut feed = Feed::new(50, 1000);
        assert_eq!(feed.ask(None).since, 0);
        feed.started(1, 0);
        assert!(!feed.due(0));
        assert!(feed.finish(1));
        let body = encode_snapshot(KS, 5, &[entry(1), entry(2)]);
        let (table, snapshot) = take_table(feed.on_answer(None, Some(200), &body, 10));
        assert!(snapshot);
        assert_eq!((table.version(), table.len()), (5, 2));
        let ask = feed.ask(Some(&table));
        assert_eq!((ask.since, ask.key_set), (5, Some(KS)));
        let delta = encode_delta(KS, 5, 6, &[FeedOp::Remove([1; 32])]);
        let (next, snapshot) = take_table(feed.on_answer(Some(&table), Some(200), &delta, 20));
        assert!(!snapshot);
        assert_eq!((next.version(), next.len()), (6, 1));
        assert!(next.get(&[1; 32]).is_none());
        assert!(table.get(&[1; 32]).is_some(), "the old table is untouched");
        assert!(matches!(
            feed.on_answer(Some(&next), Some(304), &[], 30),
            Outcome::NotModified
        ));
    }

    #[test]
    fn pages_are_assembled_in_order() {
        let mut feed = Feed::new(50, 1000);
        let first = encode_snapshot_page(KS, 3, &[entry(1), entry(2)], true);
        assert!(matches!(
            feed.on_answer(None, Some(200), &first, 0),
            Outcome::Page { pages: 1, keys: 2 }
        ));
        let ask = feed.ask(None);
        assert_eq!((ask.since, ask.after), (0, Some([2; 32])));
        let last = encode_snapshot_page(KS, 4, &[entry(3)], false);
        let (table, _) = take_table(feed.on_answer(None, Some(200), &last, 1));
        assert_eq!((table.version(), table.len()), (3, 3));
    }

    #[test]
    fn a_delta_that_does_not_fit_asks_for_a_snapshot() {
        let mut feed = Feed::new(50, 1000);
        let body = encode_snapshot(KS, 5, &[entry(1)]);
        let (table, _) = take_table(feed.on_answer(None, Some(200), &body, 0));
        let other = encode_delta(KeySet([9; 16]), 5, 6, &[]);
        assert!(matches!(
            feed.on_answer(Some(&table), Some(200), &other, 1),
            Outcome::Resync { .. }
        ));
        assert_eq!(feed.ask(Some(&table)).since, 0);
    }

    #[test]
    fn failures_retry_later_and_keep_nothing() {
        let mut feed = Feed::new(50, 1000);
        assert!(matches!(
            feed.on_answer(None, None, &[], 100),
            Outcome::Failed(Failure::NoResponse)
        ));
        assert!(!feed.due(500));
        feed.hurry(250);
        assert!(!feed.due(300) && feed.due(350));
        assert!(feed.due(1100));
        assert!(matches!(
            feed.on_answer(None, Some(200), b"garbage", 1100),
            Outcome::Failed(Failure::Garbage(_))
        ));
    }
}
