//! A new member's (VM's) first key table, straight from the control plane.
//!
//! A VM whose requests wait for a first table that shared data does not
//! have either (a new `vm_id` after a reload, a cold start) need not wait
//! for the election and the leader's first fetch: it asks for a snapshot
//! itself at once, in parallel, and retries often while requests wait.
//! Every page is asked with `wait=0`, so no long-poll is held, and goes
//! straight into this VM's table as it comes (a [`TableSink`]: no page is
//! kept, so the VM's memory, which never shrinks, peaks at the table and
//! one page, not at the table plus every page); from then on the VM follows
//! shared data like any other, and the leader's long-poll stays the Envoy's
//! only feed stream. Pure logic over the fetch loop of
//! [`crate::engine::fetch`] (unit-tested natively).

use crate::engine::fetch::{Ask, Fetcher, Outcome};
use crate::engine::sink::{TablePaging, TableSink};
use crate::table::KeyTable;
use std::fmt;

/// One VM's own snapshot fetch.
pub struct Bootstrap {
    fetcher: Fetcher<TablePaging>,
}

impl fmt::Debug for Bootstrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bootstrap").finish_non_exhaustive()
    }
}

impl Bootstrap {
    /// A fetch that retries `retry_ms` after a failure.
    pub fn new(retry_ms: u64) -> Bootstrap {
        Bootstrap {
            fetcher: Fetcher::new(0, retry_ms),
        }
    }

    /// True when the next request may start now.
    pub fn due(&self, now_ms: u64) -> bool {
        self.fetcher.due(now_ms)
    }

    /// What the next request asks for (a snapshot, or its next page).
    pub fn ask(&self) -> Ask {
        self.fetcher.ask_from(None)
    }

    pub fn started(&mut self, token: u32, ask: &Ask, now_ms: u64) {
        self.fetcher.started(u64::from(token), ask, now_ms);
    }

    pub fn start_failed(&mut self, now_ms: u64) {
        self.fetcher.start_failed(now_ms);
    }

    /// True (once) when `token` is this fetch's request in flight.
    pub fn finish(&mut self, token: u32) -> bool {
        self.fetcher.finish(u64::from(token))
    }

    /// Handles an answer; with the whole snapshot in, also the table.
    pub fn on_response(
        &mut self,
        status: Option<u16>,
        body: &[u8],
        now_ms: u64,
    ) -> (Outcome, Option<KeyTable>) {
        // No table of its own yet: a delta is refused (a snapshot comes next).
        let mut sink = TableSink::new(None);
        let outcome = self.fetcher.on_answer(&mut sink, status, body, now_ms);
        let table = match outcome {
            Outcome::Snapshot { .. } => sink.into_table(),
            _ => None,
        };
        (outcome, table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::encode_snapshot;
    use crate::feed::test_entry as entry;

    #[test]
    fn a_snapshot_becomes_the_table() {
        let mut boot = Bootstrap::new(1000);
        assert!(boot.due(0));
        let ask = boot.ask();
        assert_eq!((ask.since, ask.after), (0, None));
        boot.started(7, &ask, 0);
        assert!(!boot.due(0));
        assert!(boot.finish(7));
        let body = encode_snapshot(crate::feed::KeySet([7; 16]), 42, &[entry(1), entry(2)]);
        let (outcome, table) = boot.on_response(Some(200), &body, 5);
        assert_eq!(
            outcome,
            Outcome::Snapshot {
                version: 42,
                keys: 2
            }
        );
        let table = table.unwrap();
        assert_eq!((table.version(), table.len()), (42, 2));
    }

    #[test]
    fn a_failure_retries_later_and_gives_no_table() {
        let mut boot = Bootstrap::new(1000);
        let ask = boot.ask();
        boot.started(1, &ask, 0);
        assert!(boot.finish(1));
        let (outcome, table) = boot.on_response(None, &[], 10);
        assert!(matches!(outcome, Outcome::Failed(_)));
        assert!(table.is_none());
        assert!(!boot.due(500));
        assert!(boot.due(1010));
    }
}
