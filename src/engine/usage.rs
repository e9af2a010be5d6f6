//! The usage reporter of one proxy: counts in, batches to the control plane out.
//!
//! One reporter per Envoy (the wasm feed leader; the native module's main
//! thread) merges what the workers counted ([`Reporter::merge`]) and every
//! `usage.flush_seconds` cuts it into batches (docs/usage-protocol.md), each
//! with a random id the adapter draws from its CSPRNG. Batches wait in a
//! bounded queue and go one at a time, oldest first, over the feed's
//! cluster with the feed token ([`UsageRequest`]): a 200 acknowledges the
//! batch; a 5xx or no answer keeps it, to be sent again with the **same**
//! id after a pause (the control plane counts an id once); any other status
//! drops it (the control plane will never take it). When the queue is full
//! the oldest batch is dropped; a batch is never retried past
//! [`MAX_BATCH_AGE_MS`]. Every call reports what it did ([`Report`]) for the
//! adapter's stats. Without a key set (no table yet) nothing is cut: the
//! counts wait.

use crate::config::{FeedConfig, UsageConfig};
use crate::feed::KeySet;
use crate::usage::{batch_bodies, Tally};
use std::collections::VecDeque;

/// A batch older than this is dropped rather than sent: the control plane
/// remembers ids for 48 h.
pub const MAX_BATCH_AGE_MS: u64 = 47 * 3600 * 1000;
/// How long one ingest call may take.
pub const CALL_TIMEOUT_MS: u64 = 10_000;

/// One batch waiting for its acknowledgement.
#[derive(Debug, Clone)]
struct Batch {
    body: String,
    cut_ms: u64,
}

/// What a reporter call did, for stats and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Batches acknowledged (200).
    pub sent: u32,
    /// Batches dropped unacknowledged (queue full, too old, refused with a 4xx).
    pub dropped: u32,
    /// Sends that failed and will be retried (5xx, no answer, not started).
    pub failed: u32,
    /// The status of a refusal that dropped a batch (worth a log line).
    pub refused_status: Option<u16>,
    /// No batch id could be drawn: the counts wait for the next flush.
    pub no_random: bool,
}

/// The ingest request of one batch, ready to dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageRequest<'a> {
    pub cluster: &'a str,
    pub path: &'a str,
    pub authority: &'a str,
    /// `authorization` (a secret: never log it).
    pub authorization: &'a str,
    pub body: &'a [u8],
    pub timeout_ms: u64,
}

impl UsageRequest<'_> {
    /// The pseudo-headers, `authorization` and `content-type`, in dispatch order.
    pub fn headers(&self) -> [(&str, &str); 5] {
        [
            (":method", "POST"),
            (":path", self.path),
            (":authority", self.authority),
            ("authorization", self.authorization),
            ("content-type", "application/json"),
        ]
    }
}

/// The reporter's state.
#[derive(Debug)]
pub struct Reporter {
    cluster: String,
    authority: String,
    authorization: String,
    path: String,
    flush_ms: u64,
    max_pending: usize,
    /// Counts not yet cut into a batch.
    counts: Tally,
    /// Oldest first; the front one is the one in flight, if any.
    pending: VecDeque<Batch>,
    in_flight: Option<u64>,
    next_cut_ms: u64,
    not_before_ms: u64,
}

impl Reporter {
    /// A reporter of `usage`'s settings over `feed`'s cluster and token,
    /// cutting its first batch one interval after `now_ms`.
    pub fn new(feed: &FeedConfig, usage: &UsageConfig, now_ms: u64) -> Reporter {
        let flush_ms = u64::from(usage.flush_seconds) * 1000;
        Reporter {
            cluster: feed.cluster.clone(),
            authority: feed.authority.clone(),
            authorization: feed.token.authorization(),
            path: usage.path.clone(),
            flush_ms,
            max_pending: usage.max_pending_batches as usize,
            counts: Tally::default(),
            pending: VecDeque::new(),
            in_flight: None,
            next_cut_ms: now_ms.saturating_add(flush_ms),
            not_before_ms: 0,
        }
    }

    /// Adds counts from a worker (or this member's own).
    pub fn merge(&mut self, tally: Tally) {
        self.counts.merge(tally);
    }

    /// Batches waiting for their acknowledgement.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The periodic work: cuts a batch when the interval is over (for the
    /// key set `key_set` reads, ids from `random`, `None` when the CSPRNG
    /// failed), and starts sending the
    /// oldest waiting batch through `dispatch` (its call token, `None` when
    /// the call could not start).
    pub fn tick(
        &mut self,
        now_ms: u64,
        key_set: impl FnOnce() -> Option<KeySet>,
        random: impl FnMut() -> Option<[u8; 16]>,
        dispatch: impl FnOnce(&UsageRequest<'_>) -> Option<u64>,
    ) -> Report {
        let mut report = Report::default();
        if now_ms >= self.next_cut_ms {
            self.cut(now_ms, key_set(), random, &mut report);
        }
        self.expire(now_ms, &mut report);
        if self.in_flight.is_none() && now_ms >= self.not_before_ms {
            self.send(now_ms, dispatch, &mut report);
        }
        report
    }

    /// Handles the answer to the call `token` (`status` `None`: no HTTP
    /// answer); `None` when the call is not this reporter's.
    pub fn on_response(&mut self, token: u64, status: Option<u16>, now_ms: u64) -> Option<Report> {
        if self.in_flight != Some(token) {
            return None;
        }
        self.in_flight = None;
        let mut report = Report::default();
        match status {
            Some(200) => {
                self.pending.pop_front();
                report.sent = 1;
            }
            Some(s) if s < 500 => {
                self.pending.pop_front();
                report.dropped = 1;
                report.refused_status = Some(s);
            }
            _ => self.retry_later(now_ms, &mut report),
        }
        Some(report)
    }

    fn cut(
        &mut self,
        now_ms: u64,
        key_set: Option<KeySet>,
        mut random: impl FnMut() -> Option<[u8; 16]>,
        report: &mut Report,
    ) {
        self.next_cut_ms = now_ms.saturating_add(self.flush_ms);
        let Some(key_set) = key_set.filter(|_| !self.counts.is_empty()) else {
            return;
        };
        let needed = self.counts.len().div_ceil(crate::usage::MAX_ROWS_PER_BATCH);
        let Some(ids) = (0..needed).map(|_| random()).collect::<Option<Vec<_>>>() else {
            report.no_random = true;
            return;
        };
        let mut ids = ids.into_iter();
        let counts = self.counts.take();
        for (_, body) in batch_bodies(&counts, key_set, || ids.next().unwrap_or_default()) {
            if self.pending.len() >= self.max_pending {
                self.drop_oldest(report);
            }
            self.pending.push_back(Batch {
                body,
                cut_ms: now_ms,
            });
        }
    }

    /// Drops batches too old to be sent (the control plane may have
    /// forgotten their ids).
    fn expire(&mut self, now_ms: u64, report: &mut Report) {
        while self
            .pending
            .front()
            .is_some_and(|b| now_ms.saturating_sub(b.cut_ms) > MAX_BATCH_AGE_MS)
        {
            self.drop_oldest(report);
        }
    }

    /// Drops the oldest batch (the answer to it, if in flight, is ignored).
    fn drop_oldest(&mut self, report: &mut Report) {
        if self.pending.pop_front().is_some() {
            self.in_flight = None;
            report.dropped = report.dropped.saturating_add(1);
        }
    }

    fn send(
        &mut self,
        now_ms: u64,
        dispatch: impl FnOnce(&UsageRequest<'_>) -> Option<u64>,
        report: &mut Report,
    ) {
        let Some(batch) = self.pending.front() else {
            return;
        };
        let request = UsageRequest {
            cluster: &self.cluster,
            path: &self.path,
            authority: &self.authority,
            authorization: &self.authorization,
            body: batch.body.as_bytes(),
            timeout_ms: CALL_TIMEOUT_MS,
        };
        match dispatch(&request) {
            Some(token) => self.in_flight = Some(token),
            None => self.retry_later(now_ms, report),
        }
    }

    /// The front batch goes again, with its id, after a pause of at most
    /// one interval.
    fn retry_later(&mut self, now_ms: u64, report: &mut Report) {
        report.failed = report.failed.saturating_add(1);
        self.not_before_ms = now_ms.saturating_add(self.flush_ms.min(1000));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FilterConfig;
    use crate::decision::DenyReason;
    use crate::ids::KeyId;
    use crate::usage::Outcome;
    use serde_json::Value;

    const KS: Option<KeySet> = Some(KeySet([5; 16]));

    fn reporter(usage: &str) -> Reporter {
        let json = format!(r#"{{"feed":{{"cluster":"cp"}},"usage":{usage}}}"#);
        let c = FilterConfig::from_json_with_env(json.as_bytes(), |_| Some("tok".into())).unwrap();
        Reporter::new(&c.feed, &c.usage, 0)
    }

    fn one(key: u64, outcome: Outcome) -> Tally {
        let mut t = Tally::default();
        t.count(KeyId(key), 0, outcome);
        t
    }

    fn ids() -> impl FnMut() -> Option<[u8; 16]> {
        let mut n = 0u8;
        move || {
            n += 1;
            Some([n; 16])
        }
    }

    /// Ticks at `now`, capturing the body sent (if any) under token `token`.
    fn tick(r: &mut Reporter, now: u64, token: u64, sent: &mut Option<Value>) -> Report {
        let id = (now / 1000) as u8;
        r.tick(
            now,
            || KS,
            || Some([id; 16]),
            |req| {
                assert_eq!(req.headers()[0], (":method", "POST"));
                assert_eq!(req.path, "/v1/usage");
                assert_eq!(req.authorization, "Bearer tok");
                *sent = Some(serde_json::from_slice(req.body).unwrap());
                Some(token)
            },
        )
    }

    #[test]
    fn a_batch_goes_each_interval_and_is_acknowledged() {
        let mut r = reporter(r#"{"flush_seconds":2}"#);
        r.merge(one(1, Outcome::Allowed));
        let mut sent = None;
        assert_eq!(tick(&mut r, 1999, 1, &mut sent), Report::default());
        assert!(sent.is_none(), "not before the interval");
        tick(&mut r, 2000, 1, &mut sent);
        let body = sent.take().unwrap();
        assert_eq!(body["minutes"][0]["keys"][0]["outcomes"]["allowed"], 1);
        assert_eq!(r.on_response(99, Some(200), 2001), None, "not ours");
        let report = r.on_response(1, Some(200), 2001).unwrap();
        assert_eq!(report.sent, 1);
        assert_eq!(r.pending(), 0);
        tick(&mut r, 4000, 2, &mut sent);
        assert!(sent.is_none(), "nothing counted, nothing sent");
    }

    #[test]
    fn a_failed_batch_is_retried_with_the_same_id() {
        let mut r = reporter(r#"{"flush_seconds":1}"#);
        r.merge(one(1, Outcome::Denied(DenyReason::Expired)));
        let mut sent = None;
        tick(&mut r, 1000, 1, &mut sent);
        let first = sent.take().unwrap();
        assert_eq!(r.on_response(1, Some(503), 1010).unwrap().failed, 1);
        r.merge(one(1, Outcome::Allowed));
        tick(&mut r, 1500, 2, &mut sent);
        assert!(sent.is_none(), "paused after a failure");
        assert_eq!(r.on_response(2, None, 1500), None);
        tick(&mut r, 2010, 3, &mut sent);
        let again = sent.take().unwrap();
        assert_eq!(again, first, "the same batch, same id");
        assert_eq!(r.pending(), 2, "the new counts wait behind it");
        assert_eq!(r.on_response(3, None, 2020).unwrap().failed, 1);
        tick(&mut r, 3100, 4, &mut sent);
        assert_eq!(sent.take().unwrap()["batch_id"], first["batch_id"]);
        assert_eq!(r.on_response(4, Some(200), 3100).unwrap().sent, 1);
        tick(&mut r, 3200, 5, &mut sent);
        let second = sent.take().unwrap();
        assert_ne!(second["batch_id"], first["batch_id"]);
        assert_eq!(second["minutes"][0]["keys"][0]["outcomes"]["allowed"], 1);
    }

    #[test]
    fn a_refused_batch_is_dropped_and_a_full_queue_drops_the_oldest() {
        let mut r = reporter(r#"{"flush_seconds":1,"max_pending_batches":2}"#);
        let mut sent = None;
        for (i, now) in [1000, 2000, 3000].into_iter().enumerate() {
            r.merge(one(i as u64, Outcome::Allowed));
            let report = r.tick(now, || KS, ids(), |_| None);
            assert_eq!(report.dropped, u32::from(i == 2), "at {now}");
        }
        assert_eq!(r.pending(), 2);
        tick(&mut r, 4000, 7, &mut sent);
        let body = sent.take().unwrap();
        assert_eq!(
            body["minutes"][0]["keys"][0]["key_id"],
            KeyId(1).to_string()
        );
        let report = r.on_response(7, Some(400), 4001).unwrap();
        assert_eq!((report.dropped, report.refused_status), (1, Some(400)));
        assert_eq!(r.pending(), 1);
    }

    #[test]
    fn counts_wait_for_a_key_set_and_a_working_random() {
        let mut r = reporter(r#"{"flush_seconds":1}"#);
        r.merge(one(1, Outcome::Allowed));
        r.tick(1000, || None, ids(), |_| Some(1));
        assert_eq!(r.pending(), 0);
        let report = r.tick(2000, || KS, || None, |_| Some(1));
        assert!(report.no_random);
        assert_eq!(r.pending(), 0);
        r.tick(3000, || KS, ids(), |_| Some(1));
        assert_eq!(r.pending(), 1);
    }

    #[test]
    fn batches_too_old_are_dropped() {
        let mut r = reporter(r#"{"flush_seconds":1}"#);
        r.merge(one(1, Outcome::Allowed));
        r.tick(1000, || KS, ids(), |_| None);
        let report = r.tick(1000 + MAX_BATCH_AGE_MS + 1, || KS, ids(), |_| None);
        assert_eq!((report.dropped, r.pending()), (1, 0));
    }
}
