//! The lease holder's fetch loop, without host calls (unit-tested natively).
//!
//! One request at a time: `GET <path>?since=<version>&wait=<s>`; a 200 body
//! (snapshot or delta) is applied to the local table and published to shared
//! data, a 304 records a successful contact, and anything else (no answer,
//! another status, a body that does not decode) keeps the table and retries
//! after `retry_ms`. A delta that does not fit the table makes the next
//! request ask for a snapshot (`since=0`). Two requests never start less than
//! `min_gap_ms` apart, whatever the control plane answers.

use crate::sync::{self, Keys, Store};
use keygate::feed::FeedError;
use keygate::table::{self, KeyTable, Update};
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
            Failure::Status(401) => write!(f, "status 401 (the control plane refused feed.token)"),
            Failure::Status(s) => write!(f, "status {s}"),
            Failure::Garbage(e) => write!(f, "undecodable body ({e})"),
        }
    }
}

/// What one answer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new table from a snapshot.
    Snapshot { version: u64, keys: usize },
    /// The table moved by a delta.
    Delta {
        version: u64,
        keys: usize,
        ops: usize,
    },
    /// 304: unchanged, and the control plane is reachable.
    NotModified,
    /// A delta that does not apply to the table: a snapshot comes next.
    Resync { base: u64, have: Option<u64> },
    /// Nothing usable: the table stays, retry later.
    Failed(Failure),
}

/// The fetch loop's state.
#[derive(Debug, Clone)]
pub struct Fetcher {
    in_flight: Option<u32>,
    last_start_ms: u64,
    not_before_ms: u64,
    want_snapshot: bool,
    min_gap_ms: u64,
    retry_ms: u64,
}

impl Fetcher {
    /// A loop starting requests at most every `min_gap_ms`, retrying after `retry_ms`.
    pub fn new(min_gap_ms: u64, retry_ms: u64) -> Fetcher {
        Fetcher {
            in_flight: None,
            last_start_ms: 0,
            not_before_ms: 0,
            want_snapshot: false,
            min_gap_ms,
            retry_ms,
        }
    }

    /// True when a request may start now.
    pub fn due(&self, now_ms: u64) -> bool {
        self.in_flight.is_none() && now_ms >= self.not_before_ms
    }

    /// The `since` of the next request: 0 asks for a snapshot.
    pub fn since(&self, table: Option<&KeyTable>) -> u64 {
        match table {
            Some(t) if !self.want_snapshot => t.version(),
            _ => 0,
        }
    }

    /// Makes the next request ask for a snapshot.
    pub fn request_snapshot(&mut self) {
        self.want_snapshot = true;
    }

    /// Records a request started with `token`.
    pub fn started(&mut self, token: u32, now_ms: u64) {
        self.in_flight = Some(token);
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
        keys: &Keys,
        status: Option<u16>,
        body: &[u8],
        table: &mut Option<KeyTable>,
        now_ms: u64,
    ) -> Outcome {
        let outcome = match status {
            Some(200) => self.on_body(store, keys, body, table, now_ms),
            Some(304) => {
                sync::publish_contact(store, keys, now_ms);
                Outcome::NotModified
            }
            Some(s) => Outcome::Failed(Failure::Status(s)),
            None => Outcome::Failed(Failure::NoResponse),
        };
        self.not_before_ms = match outcome {
            Outcome::Failed(_) => now_ms.saturating_add(self.retry_ms),
            _ => self.last_start_ms.saturating_add(self.min_gap_ms),
        };
        outcome
    }

    fn on_body(
        &mut self,
        store: &impl Store,
        keys: &Keys,
        body: &[u8],
        table: &mut Option<KeyTable>,
        now_ms: u64,
    ) -> Outcome {
        match table::decode(body) {
            Err(e) => Outcome::Failed(Failure::Garbage(e)),
            Ok(Update::Snapshot(snapshot)) => {
                let (version, keys_n) = (snapshot.version(), snapshot.len());
                *table = Some(snapshot);
                sync::publish_snapshot(store, keys, body, version, now_ms);
                self.want_snapshot = false;
                Outcome::Snapshot {
                    version,
                    keys: keys_n,
                }
            }
            Ok(Update::Delta(delta)) => {
                let have = table.as_ref().map(KeyTable::version);
                let applied = match table.as_mut() {
                    Some(t) if delta.version > delta.base => t.apply(&delta).ok().map(|()| t.len()),
                    _ => None,
                };
                let Some(keys_n) = applied else {
                    self.want_snapshot = true;
                    return Outcome::Resync {
                        base: delta.base,
                        have,
                    };
                };
                let published =
                    sync::publish_delta(store, keys, body, delta.base, delta.version, now_ms);
                if published.is_none_or(|head| head.wants_compaction()) {
                    self.want_snapshot = true;
                }
                Outcome::Delta {
                    version: delta.version,
                    keys: keys_n,
                    ops: delta.len(),
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "fetch_tests.rs"]
mod tests;
