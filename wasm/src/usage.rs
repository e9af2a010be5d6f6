//! Usage counting in one VM, and its way to the one reporter of the Envoy.
//!
//! A request touches only this VM's memory: a refusal of a known key is
//! counted at once; an allowed key is remembered by context id and counted
//! on the response headers — as `rate_limited_envoy` when the answer is
//! Envoy's `local_ratelimit` 429 (`x-envoy-ratelimited`), else `allowed`,
//! with the cost the upstream put in `usage.cost_header` — or when the
//! stream ends without one. The cost header is removed from every answer,
//! counted or not. Once a second each VM enqueues what it counted (the
//! core's compact [`Tally::encode`]) on the shared queue of its feed; the
//! feed leader (in Envoy the main thread's VM) dequeues every VM's counts
//! on its ticks into its [`Reporter`], which sends the batches over the feed
//! cluster with the feed token. Batch ids come from WASI's `random_get`.

use crate::headers::{self, RawHeaders};
use crate::host;
use crate::stats::Stats;
use keygate::config::{FeedConfig, UsageConfig};
use keygate::engine::usage::{Report, Reporter, UsageRequest};
use keygate::feed::KeySet;
use keygate::ids::KeyId;
use keygate::usage::{parse_cost, Cost, Outcome, Tally};
use proxy_wasm::types::MapType;
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

/// The header Envoy's `local_ratelimit` puts on its 429.
const ENVOY_RATELIMITED: &str = "x-envoy-ratelimited";
/// Values dequeued per tick at most (the rest wait for the next tick).
const DEQUEUE_PER_TICK: usize = 4096;

/// One VM's usage state (configured in `on_configure`).
#[derive(Default)]
pub struct Usage {
    settings: RefCell<Option<Settings>>,
    /// What this VM counted since it last shipped.
    tally: RefCell<Tally>,
    /// Allowed requests of a known key, by context id, until their answer.
    open: RefCell<HashMap<u32, KeyId>>,
    /// The reporter, while this VM leads (or still has batches to send).
    reporter: RefCell<Option<Reporter>>,
}

struct Settings {
    enabled: bool,
    cost_header: String,
    queue: Option<u32>,
    feed: FeedConfig,
    usage: UsageConfig,
}

impl Usage {
    /// Takes the configuration: the shared queue of the feed is registered.
    pub fn configure(&self, feed: &FeedConfig, usage: &UsageConfig) {
        let name = format!(
            "keygate:{}|{}|{}:usage",
            feed.cluster, feed.authority, feed.path
        );
        let queue = host::register_shared_queue(&name).ok();
        if queue.is_none() && usage.enabled {
            log::warn!("could not register the usage queue: this VM's counts stay local");
        }
        *self.settings.borrow_mut() = Some(Settings {
            enabled: usage.enabled,
            cost_header: usage.cost_header.clone(),
            queue,
            feed: feed.clone(),
            usage: usage.clone(),
        });
    }

    fn enabled(&self) -> bool {
        self.settings.borrow().as_ref().is_some_and(|s| s.enabled)
    }

    /// A refusal of a known key.
    pub fn refused(&self, key: Option<KeyId>, outcome: Outcome, now_secs: u64) {
        if let Some(key) = key.filter(|_| self.enabled()) {
            self.tally.borrow_mut().count(key, now_secs, outcome);
        }
    }

    /// Request `id` of `key` was allowed: counted on its answer.
    pub fn allowed(&self, id: u32, key: KeyId) {
        if self.enabled() {
            self.open.borrow_mut().insert(id, key);
        }
    }

    /// The response headers of request `id`: the cost header goes, the
    /// request is counted with its cost.
    pub fn on_response_headers(&self, id: u32, now_secs: u64, stats: &Stats) {
        let settings = self.settings.borrow();
        let Some(settings) = settings.as_ref() else {
            return;
        };
        let map = MapType::HttpResponseHeaders;
        let key = self.open.borrow_mut().remove(&id);
        let (cost, limited) = if key.is_some() {
            answer_headers(&settings.cost_header)
        } else {
            (
                host::header(map, &settings.cost_header).ok().flatten(),
                false,
            )
        };
        if cost.is_some() && host::remove_header(map, &settings.cost_header).is_err() {
            log::warn!("could not remove the cost header from an answer");
        }
        let Some(key) = key else {
            return;
        };
        let outcome = if limited {
            Outcome::RateLimitedEnvoy
        } else {
            Outcome::Allowed
        };
        let mut tally = self.tally.borrow_mut();
        tally.count(key, now_secs, outcome);
        let micros = match cost.as_deref().map(parse_cost) {
            None => return,
            Some(Cost::Micros(n)) => n,
            Some(Cost::Clamped(n)) => {
                stats.cost_clamped();
                n
            }
            Some(Cost::Malformed) => {
                stats.cost_malformed();
                return;
            }
        };
        tally.cost(key, now_secs, micros);
    }

    /// Request `id` ended: counted as allowed if its answer never came.
    pub fn on_done(&self, id: u32, now_secs: u64) {
        if let Some(key) = self.open.borrow_mut().remove(&id) {
            self.tally
                .borrow_mut()
                .count(key, now_secs, Outcome::Allowed);
        }
    }

    /// Hands what this VM counted to the reporter: its own when it leads,
    /// else through the shared queue.
    pub fn ship(&self, leads: bool) {
        if self.tally.borrow().is_empty() {
            return;
        }
        let tally = self.tally.borrow_mut().take();
        if leads {
            if let Some(reporter) = self.reporter.borrow_mut().as_mut() {
                reporter.merge(tally);
                return;
            }
        }
        let queue = self.settings.borrow().as_ref().and_then(|s| s.queue);
        let shipped = queue.is_some_and(|q| host::enqueue_shared_queue(q, &tally.encode()).is_ok());
        if !shipped {
            // Kept for the next try rather than lost.
            self.tally.borrow_mut().merge(tally);
        }
    }

    /// The leader's tick: every VM's counts in, batches out. A VM that no
    /// longer leads still sends the batches it holds.
    pub fn report(
        &self,
        leads: bool,
        now_ms: u64,
        key_set: impl FnOnce() -> Option<KeySet>,
    ) -> Report {
        let settings = self.settings.borrow();
        let Some(settings) = settings.as_ref().filter(|s| s.enabled) else {
            return Report::default();
        };
        let mut reporter = self.reporter.borrow_mut();
        if leads && reporter.is_none() {
            *reporter = Some(Reporter::new(&settings.feed, &settings.usage, now_ms));
        }
        let Some(reporter) = reporter.as_mut() else {
            return Report::default();
        };
        if leads {
            if let Some(queue) = settings.queue {
                drain(queue, reporter);
            }
        } else if reporter.pending() == 0 {
            return Report::default();
        }
        reporter.tick(now_ms, key_set, random_id, dispatch)
    }

    /// The answer to call `token`, if it is the reporter's.
    pub fn on_response(&self, token: u32, status: Option<u16>, now_ms: u64) -> Option<Report> {
        self.reporter
            .borrow_mut()
            .as_mut()?
            .on_response(u64::from(token), status, now_ms)
    }

    /// Batches waiting for their acknowledgement.
    pub fn pending(&self) -> usize {
        self.reporter.borrow().as_ref().map_or(0, Reporter::pending)
    }
}

/// The cost header and whether Envoy's `local_ratelimit` answered, from
/// one read of the response headers (`(None, false)` if the host refuses).
fn answer_headers(cost_header: &str) -> (Option<Vec<u8>>, bool) {
    let raw = RawHeaders::read(MapType::HttpResponseHeaders);
    let Some(entries) = raw.as_ref().and_then(RawHeaders::entries) else {
        return (None, false);
    };
    let cost = headers::value(&entries, cost_header).map(<[u8]>::to_vec);
    (cost, headers::value(&entries, ENVOY_RATELIMITED).is_some())
}

/// Moves the counts every VM enqueued into `reporter`.
fn drain(queue: u32, reporter: &mut Reporter) {
    for _ in 0..DEQUEUE_PER_TICK {
        let Ok(Some(bytes)) = host::dequeue_shared_queue(queue) else {
            return;
        };
        let mut tally = Tally::default();
        if tally.merge_encoded(&bytes) {
            reporter.merge(tally);
        } else {
            log::warn!("dropped malformed usage counts from the shared queue");
        }
    }
}

/// 16 bytes from WASI's `random_get`.
fn random_id() -> Option<[u8; 16]> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).ok().map(|()| id)
}

/// Starts the ingest call of one batch.
fn dispatch(request: &UsageRequest<'_>) -> Option<u64> {
    host::dispatch_http_call(
        request.cluster,
        request.headers().to_vec(),
        Some(request.body),
        Duration::from_millis(request.timeout_ms),
    )
    .ok()
    .map(u64::from)
}
