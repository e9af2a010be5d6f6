//! The lease holder's fetch loop: what to ask next, what an answer did, pacing.
//!
//! One request at a time: `GET <path>?since=<version>&wait=<s>&key_set=<id>`
//! (the key set of the shared head, or of the snapshot being assembled: the
//! control plane answers a client of another key set with a snapshot). The leader
//! keeps no table of its own for this: it checks each 200 body and publishes
//! it to the store, where every member that serves requests picks it up. A
//! snapshot comes in pages (docs/feed-protocol.md): each is stored as it
//! arrives and the next one is asked for at once (`since=0&after=<hash>`);
//! the head points at the snapshot after its last page. A delta extends the
//! shared chain. A 304 records a successful contact; anything else (no
//! answer, another status, a body that does not check) keeps what is shared
//! and retries after `retry_ms`. A delta that does not fit the shared head
//! makes the next request ask for a snapshot (`since=0`), as does a delta of
//! another key set than the head's; a page of another key set than the pages
//! before it abandons that snapshot, which starts over from its first page.
//! Requests other than the next page never start less than `min_gap_ms` apart.

use crate::engine::store::{SharedKeys, Store};
use crate::engine::sync::{self, Head, PagedSnapshot};
use crate::feed::{self, FeedError, KeySet, Reader};
use crate::table::{self, Update};
use std::fmt;

/// Why a fetch gave nothing usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The call could not be made (e.g. unknown cluster).
    Dispatch,
    /// No HTTP answer: connection refused or reset, or timeout.
    NoResponse,
    /// An answer other than 200 or 304.
    Status(u16),
    /// A 200 whose body does not decode.
    Garbage(FeedError),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Dispatch => write!(
                f,
                "the call could not be dispatched (is the cluster defined?)"
            ),
            Failure::NoResponse => {
                write!(f, "no response (control plane unreachable or timed out)")
            }
            Failure::Status(401) => write!(
                f,
                "status 401 (the control plane refused the token in feed.token_env)"
            ),
            Failure::Status(s) => write!(f, "status {s}"),
            Failure::Garbage(e) => write!(f, "undecodable body ({e})"),
        }
    }
}

/// What one answer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A snapshot page stored; more follow.
    Page { pages: u32, keys: u64 },
    /// A whole snapshot published.
    Snapshot { version: u64, keys: u64 },
    /// A delta published.
    Delta { version: u64, ops: usize },
    /// 304: unchanged, and the control plane is reachable.
    NotModified,
    /// A delta that does not apply to the shared table: a snapshot comes next.
    Resync { base: u64, have: Option<u64> },
    /// A snapshot page of another key set than the pages before it: the
    /// snapshot starts over from its first page.
    NewKeySet { key_set: KeySet },
    /// Nothing usable: the table stays, retry later.
    Failed(Failure),
}

/// What the next request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    /// 0 asks for a snapshot.
    pub since: u64,
    /// The snapshot page after this hash.
    pub after: Option<[u8; 32]>,
    /// The key set `since` (or the pages so far) belong to; `None` before
    /// the first table.
    pub key_set: Option<KeySet>,
}

/// The fetch loop's state.
#[derive(Debug, Clone)]
pub struct Fetcher {
    in_flight: Option<u32>,
    /// The request in flight asks for a snapshot (page).
    in_flight_snapshot: bool,
    last_start_ms: u64,
    not_before_ms: u64,
    want_snapshot: bool,
    /// A snapshot whose first pages are stored, waiting for the rest.
    paging: Option<PagedSnapshot>,
    min_gap_ms: u64,
    retry_ms: u64,
}

impl Fetcher {
    /// A loop starting requests at most every `min_gap_ms`, retrying after `retry_ms`.
    pub fn new(min_gap_ms: u64, retry_ms: u64) -> Fetcher {
        Fetcher {
            in_flight: None,
            in_flight_snapshot: false,
            last_start_ms: 0,
            not_before_ms: 0,
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

    /// What the next request asks, given the shared head.
    pub fn ask(&self, head: Option<&Head>) -> Ask {
        if let Some(paging) = &self.paging {
            return Ask {
                since: 0,
                after: paging.after().copied(),
                key_set: paging.key_set(),
            };
        }
        let since = match head {
            Some(h) if !self.want_snapshot => h.version,
            _ => 0,
        };
        Ask {
            since,
            after: None,
            key_set: head.map(|h| h.key_set),
        }
    }

    /// Makes the next request ask for a snapshot.
    /// A follower needs one (it has no table and shared data holds no
    /// snapshot any more): unless one is already coming, a held long-poll is
    /// given up (its answer will not be ours) so the snapshot starts at once
    /// instead of after the wait.
    pub fn request_snapshot(&mut self) {
        let coming = self.paging.is_some() || (self.in_flight.is_some() && self.in_flight_snapshot);
        if coming {
            return;
        }
        self.want_snapshot = true;
        if self.in_flight.take().is_some() {
            self.not_before_ms = 0;
        }
    }

    /// Records a request started with `token` for `ask`.
    pub fn started(&mut self, token: u32, ask: &Ask, now_ms: u64) {
        self.in_flight = Some(token);
        self.in_flight_snapshot = ask.since == 0;
        self.last_start_ms = now_ms;
    }

    /// Records a request that could not start.
    pub fn start_failed(&mut self, now_ms: u64) -> Outcome {
        self.not_before_ms = now_ms.saturating_add(self.retry_ms);
        Outcome::Failed(Failure::Dispatch)
    }

    /// True (once) when `token` is the request in flight: its answer is ours.
    pub fn finish(&mut self, token: u32) -> bool {
        let ours = self.in_flight == Some(token);
        if ours {
            self.in_flight = None;
        }
        ours
    }

    /// Handles the answer to the request in flight: `status` is `None` when
    /// there was no HTTP answer.
    pub fn on_response(
        &mut self,
        store: &impl Store,
        keys: &SharedKeys,
        status: Option<u16>,
        body: &[u8],
        now_ms: u64,
    ) -> Outcome {
        let outcome = match status {
            Some(200) => self.on_body(store, keys, body, now_ms),
            Some(304) => {
                sync::publish_contact(store, keys, now_ms);
                Outcome::NotModified
            }
            Some(s) => Outcome::Failed(Failure::Status(s)),
            None => Outcome::Failed(Failure::NoResponse),
        };
        if matches!(outcome, Outcome::Failed(_)) {
            // A snapshot resumes from its first page.
            if let Some(paging) = self.paging.take() {
                paging.abandon(store, keys);
            }
        }
        self.not_before_ms = match outcome {
            Outcome::Failed(_) => now_ms.saturating_add(self.retry_ms),
            Outcome::Page { .. } | Outcome::NewKeySet { .. } => now_ms,
            _ => self.last_start_ms.saturating_add(self.min_gap_ms),
        };
        outcome
    }

    fn on_body(
        &mut self,
        store: &impl Store,
        keys: &SharedKeys,
        body: &[u8],
        now_ms: u64,
    ) -> Outcome {
        match Reader::header(body) {
            Err(e) => Outcome::Failed(Failure::Garbage(e)),
            Ok((header, _)) if header.snapshot => {
                self.on_page(store, keys, body, header.key_set, now_ms)
            }
            Ok(_) => self.on_delta(store, keys, body, now_ms),
        }
    }

    fn on_page(
        &mut self,
        store: &impl Store,
        keys: &SharedKeys,
        body: &[u8],
        key_set: KeySet,
        now_ms: u64,
    ) -> Outcome {
        let mut paging = self
            .paging
            .take()
            .unwrap_or_else(|| PagedSnapshot::start(store, keys));
        if paging.key_set().is_some_and(|k| k != key_set) {
            // The database changed under the assembly: start it over.
            paging.abandon(store, keys);
            self.want_snapshot = true;
            return Outcome::NewKeySet { key_set };
        }
        let page = match feed::check_snapshot_page(body, paging.after()) {
            Ok(page) => page,
            Err(e) => {
                paging.abandon(store, keys);
                return Outcome::Failed(Failure::Garbage(e));
            }
        };
        paging.add_page(store, keys, body, &page);
        if page.more {
            let outcome = Outcome::Page {
                pages: paging.pages(),
                keys: paging.keys(),
            };
            self.paging = Some(paging);
            return outcome;
        }
        sync::publish_snapshot(store, keys, &paging, now_ms);
        self.want_snapshot = false;
        Outcome::Snapshot {
            version: paging.version(),
            keys: paging.keys(),
        }
    }

    fn on_delta(
        &mut self,
        store: &impl Store,
        keys: &SharedKeys,
        body: &[u8],
        now_ms: u64,
    ) -> Outcome {
        let delta = match table::decode(body) {
            Ok(Update::Delta(d)) => d,
            Ok(Update::Snapshot(_)) => return Outcome::Failed(Failure::Garbage(FeedError::Magic)),
            Err(e) => return Outcome::Failed(Failure::Garbage(e)),
        };
        let published = (delta.version > delta.base)
            .then(|| sync::publish_delta(store, keys, body, now_ms))
            .flatten();
        let Some(head) = published else {
            // A refused delta leaves the head as it was.
            self.want_snapshot = true;
            return Outcome::Resync {
                base: delta.base,
                have: sync::read_head(store, keys).map(|h| h.version),
            };
        };
        if head.wants_compaction() {
            self.want_snapshot = true;
        }
        Outcome::Delta {
            version: delta.version,
            ops: delta.len(),
        }
    }
}

#[cfg(test)]
#[path = "fetch_tests.rs"]
mod tests;
