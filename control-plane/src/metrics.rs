//! `GET /metrics`: the feed's counters in the Prometheus text format 0.0.4,
//! written by hand (a few lines, no metrics crate).
//!
//! - `keygate_feed_requests_total{answer}`: feed answers by kind (`snapshot`,
//!   `delta`, `not_modified`, `unauthorized`, `bad_request`, `error`); a
//!   snapshot counts once per page. A client that hangs up before its answer
//!   is not counted.
//! - `keygate_feed_waiting`: long-polls held right now. Each Envoy holds one,
//!   whatever its worker count, so this is the number of connected Envoys.
//! - `keygate_feed_version`: the current key table version.
//! - `keygate_feed_envoys`: fetch streams (one per Envoy) connected to this
//!   replica's feed, as counted for delivered revocations (crate::delivery).
//! - `keygate_propagation_timeouts_total`: revocations that answered after
//!   the propagation timeout, some connected Envoy not reached.
//! - `keygate_password_hashes_total`: argon2id hashes and checks computed
//!   (sign-up, sign-in, password changes; crate::password).
//!
//! No authentication: nothing here is secret. The route is served on the
//! control plane's own address, which Envoy does not forward (only
//! `/api/v1/…`); keep that address private.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Route of the metrics.
pub const PATH: &str = "/metrics";
const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// What the feed answered one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Snapshot,
    Delta,
    NotModified,
    Unauthorized,
    BadRequest,
    /// Anything else (a store failure).
    Error,
}

impl Answer {
    const ALL: [Answer; 6] = [
        Answer::Snapshot,
        Answer::Delta,
        Answer::NotModified,
        Answer::Unauthorized,
        Answer::BadRequest,
        Answer::Error,
    ];

    fn label(self) -> &'static str {
        match self {
            Answer::Snapshot => "snapshot",
            Answer::Delta => "delta",
            Answer::NotModified => "not_modified",
            Answer::Unauthorized => "unauthorized",
            Answer::BadRequest => "bad_request",
            Answer::Error => "error",
        }
    }
}

/// The feed's counters: lock-free, shared by every request.
#[derive(Debug, Default)]
pub struct FeedMetrics {
    snapshot: AtomicU64,
    delta: AtomicU64,
    not_modified: AtomicU64,
    unauthorized: AtomicU64,
    bad_request: AtomicU64,
    error: AtomicU64,
    waiting: AtomicU64,
    /// Answers read from the store and encoded (the rest came from the cache).
    built: AtomicU64,
}

/// One held long-poll: counted in `waiting` until dropped, whether the wait
/// ends or the client hangs up (its request future is dropped).
#[must_use = "the long-poll is counted only while the guard lives"]
pub struct Waiting<'a>(&'a AtomicU64);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl FeedMetrics {
    fn counter(&self, answer: Answer) -> &AtomicU64 {
        match answer {
            Answer::Snapshot => &self.snapshot,
            Answer::Delta => &self.delta,
            Answer::NotModified => &self.not_modified,
            Answer::Unauthorized => &self.unauthorized,
            Answer::BadRequest => &self.bad_request,
            Answer::Error => &self.error,
        }
    }

    /// Counts one answer.
    pub fn answered(&self, answer: Answer) {
        self.counter(answer).fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one answer read from the store and encoded.
    pub fn built(&self) {
        self.built.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a long-poll as held until the guard drops.
    pub fn wait(&self) -> Waiting<'_> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(&self.waiting)
    }

    /// The exposition text, with `version` as the table version and the
    /// delivery figures.
    fn render(&self, version: u64, delivery: Propagation) -> String {
        let mut text = String::new();
        family(
            &mut text,
            "keygate_feed_requests_total",
            "counter",
            "Answers of the key table feed, by kind.",
        );
        for answer in Answer::ALL {
            let count = self.counter(answer).load(Ordering::Relaxed);
            let _ = writeln!(
                text,
                "keygate_feed_requests_total{{answer=\"{}\"}} {count}",
                answer.label()
            );
        }
        family(
            &mut text,
            "keygate_feed_bodies_built_total",
            "counter",
            "Feed answers read from the store and encoded; the other answers share them.",
        );
        let built = self.built.load(Ordering::Relaxed);
        let _ = writeln!(text, "keygate_feed_bodies_built_total {built}");
        let waiting = self.waiting.load(Ordering::Relaxed);
        gauge(
            &mut text,
            "keygate_feed_waiting",
            "Long-polls held open right now.",
            waiting,
        );
        gauge(
            &mut text,
            "keygate_feed_version",
            "Current key table version.",
            version,
        );
        gauge(
            &mut text,
            "keygate_feed_envoys",
            "Fetch streams connected to this replica's feed.",
            delivery.envoys as u64,
        );
        family(
            &mut text,
            "keygate_propagation_timeouts_total",
            "counter",
            "Revocations answered after the propagation timeout, some Envoy not reached.",
        );
        let _ = writeln!(
            text,
            "keygate_propagation_timeouts_total {}",
            delivery.timeouts
        );
        text
    }
}

/// What the metrics show of delivered revocations.
#[derive(Debug, Clone, Copy, Default)]
pub struct Propagation {
    /// Fetch streams connected now.
    pub envoys: usize,
    /// Waits that timed out so far.
    pub timeouts: u64,
}

/// The `# HELP` and `# TYPE` lines of a metric family.
fn family(text: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn gauge(text: &mut String, name: &str, help: &str, value: u64) {
    family(text, name, "gauge", help);
    let _ = writeln!(text, "{name} {value}");
}

/// The answer to `GET /metrics`, with `version` as the table version, the
/// delivery figures and the password hashes computed.
pub fn response(
    metrics: &FeedMetrics,
    version: u64,
    delivery: Propagation,
    hashes: u64,
) -> Response {
    let content_type = [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))];
    let mut text = metrics.render(version, delivery);
    let name = "keygate_password_hashes_total";
    family(
        &mut text,
        name,
        "counter",
        "Password hashes and checks computed.",
    );
    let _ = writeln!(text, "{name} {hashes}");
    (content_type, text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_answer_and_the_gauges() {
        let metrics = FeedMetrics::default();
        metrics.answered(Answer::Delta);
        metrics.answered(Answer::Delta);
        let held = metrics.wait();
        let propagation = Propagation {
            envoys: 1,
            timeouts: 3,
        };
        let text = metrics.render(42, propagation);
        assert!(text.contains("# TYPE keygate_feed_requests_total counter\n"));
        assert!(text.contains("keygate_feed_requests_total{answer=\"delta\"} 2\n"));
        assert!(text.contains("keygate_feed_requests_total{answer=\"bad_request\"} 0\n"));
        assert!(text.contains("keygate_feed_waiting 1\n"));
        assert!(text.contains("keygate_feed_version 42\n"));
        assert!(text.contains("keygate_feed_envoys 1\n"));
        assert!(text.contains("# TYPE keygate_propagation_timeouts_total counter\n"));
        assert!(text.contains("keygate_propagation_timeouts_total 3\n"));
        drop(held);
        let text = metrics.render(42, Propagation::default());
        assert!(text.contains("keygate_feed_waiting 0\n"));
    }
}
