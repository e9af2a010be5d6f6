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
//!
//! Only the scheduling and the reading of answers live here: where a body
//! goes is a [`Sink`]'s job ([`crate::engine::sink`]). The words above are
//! the store mode's (the wasm filter's); the native module runs the same
//! loop with a table-direct sink (no store, a delta applied to a copy of the
//! table, a resync asked at once).

use crate::engine::shared::{SharedData, SharedKeys};
use crate::engine::sink::{Applied, Paging, SharedDataSink, Sink};
use crate::engine::sync::{Head, PagedSnapshot};
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

/// The fetch loop's state; `P` is the snapshot being assembled (see
/// [`crate::engine::sink`]: store pages by default, or a table builder).
#[derive(Debug, Clone)]
pub struct Fetcher<P = PagedSnapshot> {
    in_flight: Option<u64>,
    /// The request in flight asks for a snapshot (page).
    in_flight_snapshot: bool,
    last_start_ms: u64,
    not_before_ms: u64,
    /// Unix ms of the last failure (an answer, or a start).
    failed_ms: u64,
    want_snapshot: bool,
    /// A snapshot whose first pages are in, waiting for the rest.
    paging: Option<P>,
    min_gap_ms: u64,
    retry_ms: u64,
}

impl Fetcher<PagedSnapshot> {
    /// What the next request asks, given the shared head.
    pub fn ask(&self, head: Option<&Head>) -> Ask {
        self.ask_from(head.map(|h| (h.version, h.key_set)))
    }

    /// Handles the answer to the request in flight, publishing to `store`:
    /// `status` is `None` when there was no HTTP answer.
    pub fn on_response(
        &mut self,
        store: &impl SharedData,
        keys: &SharedKeys,
        status: Option<u16>,
        body: &[u8],
        now_ms: u64,
    ) -> Outcome {
        self.on_answer(&mut SharedDataSink { store, keys }, status, body, now_ms)
    }
}

impl<P: Paging> Fetcher<P> {
    /// A loop starting requests at most every `min_gap_ms`, retrying after `retry_ms`.
    pub fn new(min_gap_ms: u64, retry_ms: u64) -> Fetcher<P> {
        Fetcher {
            in_flight: None,
            in_flight_snapshot: false,
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

    /// What the next request asks, given the version and key set in place.
    pub fn ask_from(&self, have: Option<(u64, KeySet)>) -> Ask {
        if let Some(paging) = &self.paging {
            return Ask {
                since: 0,
                after: paging.after().copied(),
                key_set: paging.key_set(),
            };
        }
        let since = match have {
            Some((version, _)) if !self.want_snapshot => version,
            _ => 0,
        };
        Ask {
            since,
            after: None,
            key_set: have.map(|(_, key_set)| key_set),
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
    pub fn started(&mut self, token: u64, ask: &Ask, now_ms: u64) {
        self.in_flight = Some(token);
        self.in_flight_snapshot = ask.since == 0;
        self.last_start_ms = now_ms;
    }

    /// Records a request that could not start.
    pub fn start_failed(&mut self, now_ms: u64) -> Outcome {
        self.not_before_ms = now_ms.saturating_add(self.retry_ms);
        self.failed_ms = now_ms;
        Outcome::Failed(Failure::Dispatch)
    }

    /// True (once) when `token` is the request in flight: its answer is ours.
    pub fn finish(&mut self, token: u64) -> bool {
        let ours = self.in_flight == Some(token);
        if ours {
            self.in_flight = None;
        }
        ours
    }

    /// Handles the answer to the request in flight, into `sink`: `status`
    /// is `None` when there was no HTTP answer.
    pub fn on_answer<S: Sink<Paging = P>>(
        &mut self,
        sink: &mut S,
        status: Option<u16>,
        body: &[u8],
        now_ms: u64,
    ) -> Outcome {
        let outcome = match status {
            Some(200) => self.on_body(sink, body, now_ms),
            Some(304) => {
                sink.contact(now_ms);
                Outcome::NotModified
            }
            Some(s) => Outcome::Failed(Failure::Status(s)),
            None => Outcome::Failed(Failure::NoResponse),
        };
        if matches!(outcome, Outcome::Failed(_)) {
            // A snapshot resumes from its first page.
            if let Some(paging) = self.paging.take() {
                sink.abandon(paging);
            }
            self.failed_ms = now_ms;
        }
        self.not_before_ms = match outcome {
            Outcome::Failed(_) => now_ms.saturating_add(self.retry_ms),
            Outcome::Page { .. } | Outcome::NewKeySet { .. } => now_ms,
            Outcome::Resync { .. } if S::RESYNC_AT_ONCE => now_ms,
            _ => self.last_start_ms.saturating_add(self.min_gap_ms),
        };
        outcome
    }

    fn on_body<S: Sink<Paging = P>>(&mut self, sink: &mut S, body: &[u8], now_ms: u64) -> Outcome {
        match Reader::header(body) {
            Err(e) => Outcome::Failed(Failure::Garbage(e)),
            Ok((header, _)) if header.snapshot => self.on_page(sink, body, header.key_set, now_ms),
            Ok(_) => self.on_delta(sink, body, now_ms),
        }
    }

    fn on_page<S: Sink<Paging = P>>(
        &mut self,
        sink: &mut S,
        body: &[u8],
        key_set: KeySet,
        now_ms: u64,
    ) -> Outcome {
        let mut paging = match self.paging.take() {
            Some(paging) => paging,
            None => sink.start(),
        };
        if paging.key_set().is_some_and(|k| k != key_set) {
            // The database changed under the assembly: start it over.
            sink.abandon(paging);
            self.want_snapshot = true;
            return Outcome::NewKeySet { key_set };
        }
        let added = feed::check_snapshot_page(body, paging.after())
            .and_then(|page| sink.add_page(&mut paging, body, &page).map(|()| page));
        let page = match added {
            Ok(page) => page,
            Err(e) => {
                sink.abandon(paging);
                return Outcome::Failed(Failure::Garbage(e));
            }
        };
        if page.more {
            let outcome = Outcome::Page {
                pages: paging.pages(),
                keys: paging.keys(),
            };
            self.paging = Some(paging);
            return outcome;
        }
        let keys = paging.keys();
        match sink.finish(paging, now_ms) {
            Ok(version) => {
                self.want_snapshot = false;
                Outcome::Snapshot { version, keys }
            }
            Err(e) => Outcome::Failed(Failure::Garbage(e)),
        }
    }

    fn on_delta<S: Sink<Paging = P>>(&mut self, sink: &mut S, body: &[u8], now_ms: u64) -> Outcome {
        let delta = match table::decode(body) {
            Ok(Update::Delta(d)) => d,
            Ok(Update::Snapshot(_)) => return Outcome::Failed(Failure::Garbage(FeedError::Magic)),
            Err(e) => return Outcome::Failed(Failure::Garbage(e)),
        };
        match sink.delta(body, &delta, now_ms) {
            Applied::Yes { compact } => {
                if compact {
                    self.want_snapshot = true;
                }
                Outcome::Delta {
                    version: delta.version,
                    ops: delta.len(),
                }
            }
            Applied::Refused => {
                self.want_snapshot = true;
                Outcome::Resync {
                    base: delta.base,
                    have: sink.version(),
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "fetch_tests.rs"]
mod tests;
