//! The root context of one VM: configuration, the tick, the feed.
//!
//! Every VM (one per worker thread, one on the main thread) ticks every
//! `feed.sync_interval_ms`: it takes or renews the fetch lease and, holding
//! it, keeps one request to the control plane in flight, publishing what
//! comes back to shared data. So an Envoy process has one fetch stream
//! whatever its concurrency, with no bootstrap extension (it works under
//! Istio's `WasmPlugin`). Who leads is settled through [`crate::followers`]:
//! every VM starts as a candidate; a candidate that sees a live candidate of
//! its configuration started before it becomes a follower, and candidates
//! claim the lease only after [`CLAIM_GRACE_MS`], so that every VM has
//! announced itself by then.
//! In Envoy the first is the main thread's VM, which serves no request and so
//! keeps no table: a big table is held once per worker, not once more.
//! Followers keep the shared table in their own (as does any VM once it
//! serves a request). After every table change, and every second for
//! expiry, open WebSockets whose key died are reset.

use crate::fetch::{Fetcher, Outcome};
use crate::followers::{self, Announcer, Role};
use crate::host;
use crate::http::Http;
use crate::shared::SharedData;
use crate::state::{now_ms, unix_now, State};
use crate::sync::{self, Keys, Lease, Release, Synced};
use keygate::config::{FeedConfig, FilterConfig};
use keygate::decision::Policy;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, LogLevel, MapType};
use std::cell::Cell;
use std::fmt::Write;
use std::rc::Rc;
use std::time::Duration;

/// Extra time the feed call gets beyond the long-poll wait.
const CALL_MARGIN_SECS: u64 = 10;
/// Shortest lease; it is also at least a few ticks long.
const MIN_LEASE_MS: u64 = 3000;
/// A streak of fetch failures is logged at its start and then this often.
const FAILURES_LOGGED_EVERY: u32 = 60;
/// Snapshot pages stay in shared data at least this long after publication,
/// so that VMs starting at the same time find them.
const SNAPSHOT_HOLD_MS: u64 = 2000;
/// A candidate claims the free lease no sooner than this after it was
/// configured: by then every VM configured with it has announced itself.
pub const CLAIM_GRACE_MS: u64 = 200;

/// The feed side of a configured root.
struct Feed {
    config: FeedConfig,
    keys: Keys,
    lease: Lease,
    fetcher: Fetcher,
    leader: bool,
    /// Fetch failures in a row.
    failures: u32,
    announcer: Announcer,
    /// Still a candidate to lead (keeps no table unless it serves).
    candidate: bool,
    /// Unix ms when this VM was configured.
    configured_ms: u64,
}

/// The root context.
pub struct Root {
    id: u32,
    state: Rc<State>,
    feed: Option<Feed>,
    /// Unix second of the last once-a-second chores.
    last_second: u64,
    /// Head version this VM could not reach (logged once).
    stuck_at: Cell<Option<u64>>,
}

impl Root {
    pub fn new(id: u32) -> Root {
        Root {
            id,
            state: Rc::new(State::new()),
            feed: None,
            last_second: 0,
            stuck_at: Cell::new(None),
        }
    }

    fn configure(&mut self, bytes: &[u8]) -> Result<(), String> {
        let mut config = FilterConfig::from_json(bytes).map_err(|e| e.to_string())?;
        let wait = effective_wait(&config.feed);
        if wait < config.feed.wait_seconds {
            log::info!(
                "long-poll wait lowered from {} s to {wait} s: answers must come well within feed.max_staleness_seconds ({} s)",
                config.feed.wait_seconds,
                config.feed.max_staleness_seconds
            );
            config.feed.wait_seconds = wait;
        }
        let feed = &config.feed;
        let keys = Keys::new(&format!(
            "{}|{}|{}",
            feed.cluster, feed.authority, feed.path
        ));
        let tick = u64::from(feed.sync_interval_ms);
        let now = now_ms();
        let lease = Lease::new(
            &SharedData,
            &keys,
            (unix_now().as_nanos() as u64) ^ u64::from(self.id).rotate_right(16),
            MIN_LEASE_MS.max(4 * tick),
        );
        let announcer = Announcer::new(lease.owner(), now);
        host::set_tick_period(Duration::from_millis(tick))
            .map_err(|s| format!("cannot set the tick period: {s:?}"))?;
        *self.state.policy.borrow_mut() = Some(Policy::from(&config));
        self.state
            .max_staleness_ms
            .set(u64::from(feed.max_staleness_seconds) * 1000);
        self.feed = Some(Feed {
            fetcher: Fetcher::new(tick, u64::from(feed.retry_ms)),
            config: config.feed,
            keys,
            lease,
            leader: false,
            failures: 0,
            announcer,
            candidate: true,
            configured_ms: now,
        });
        Ok(())
    }

    /// True when this VM keeps a table: it may serve requests.
    fn follows(&self, feed: &Feed) -> bool {
        !feed.candidate || self.state.serving.get() || self.state.table.borrow().is_some()
    }

    /// Announces this VM, settles whether it stays a candidate, and takes or
    /// renews the lease; true while it leads.
    fn elect(&self, feed: &mut Feed, now: u64) -> bool {
        let role = if self.follows(feed) {
            Role::Follower(self.table_summary().0)
        } else {
            Role::Candidate
        };
        feed.announcer.announce(&SharedData, &feed.keys, role, now);
        if feed.candidate && !feed.leader && feed.announcer.defers(&SharedData, &feed.keys, now) {
            // Another VM of this configuration started first: it leads.
            feed.candidate = false;
        }
        let (candidate, grace_over) = (
            feed.candidate,
            now >= feed.configured_ms.saturating_add(CLAIM_GRACE_MS),
        );
        let keys = &feed.keys;
        let may_claim = || {
            if candidate {
                grace_over
            } else {
                // Only when no candidate is left (the leader's VM went away).
                !followers::any_candidate(&SharedData, keys, now)
            }
        };
        feed.lease.tick(&SharedData, keys, now, may_claim)
    }

    /// Catches up with shared data; true when the table changed.
    fn follow(&self, feed: &Feed) -> bool {
        let Some(head) = sync::read_head(&SharedData, &feed.keys) else {
            return false;
        };
        self.state.contact_ms.set(head.contact_ms);
        let synced = {
            let mut table = self.state.table.borrow_mut();
            sync::catch_up(&SharedData, &feed.keys, &head, &mut table)
        };
        let stuck = match synced {
            Synced::Stuck | Synced::Changed { at_head: false, .. } => Some(head.version),
            _ => None,
        };
        if stuck.is_some() && stuck != self.stuck_at.get() {
            log::warn!(
                "cannot reach key table version {} from shared data; asked the leader for a snapshot",
                head.version
            );
        }
        self.stuck_at.set(stuck);
        match synced {
            Synced::Unchanged | Synced::Stuck => false,
            Synced::Changed { from_snapshot, .. } => {
                let (version, keys) = self.table_summary();
                let source = if from_snapshot { "snapshot" } else { "deltas" };
                log::debug!(
                    "worker loaded key table version {version} ({keys} keys) from shared {source}"
                );
                true
            }
        }
    }

    fn table_summary(&self) -> (u64, usize) {
        self.state
            .table
            .borrow()
            .as_ref()
            .map_or((0, 0), |t| (t.version(), t.len()))
    }

    /// Starts the next feed request if this VM leads and one is due.
    fn poll(&self, feed: &mut Feed, now: u64) {
        if !feed.leader || !feed.fetcher.due(now) {
            return;
        }
        let ask = feed
            .fetcher
            .ask(sync::read_head(&SharedData, &feed.keys).as_ref());
        let config = &feed.config;
        let separator = if config.path.contains('?') { '&' } else { '?' };
        let mut path = format!(
            "{}{separator}since={}&wait={}",
            config.path, ask.since, config.wait_seconds
        );
        if let Some(after) = ask.after {
            let _ = write!(path, "&after={}", hex::encode(after));
        }
        let authorization = format!("Bearer {}", config.token);
        let headers = vec![
            (":method", "GET"),
            (":path", path.as_str()),
            (":authority", config.authority.as_str()),
            ("authorization", authorization.as_str()),
        ];
        let timeout = Duration::from_secs(u64::from(config.wait_seconds) + CALL_MARGIN_SECS);
        match host::dispatch_http_call(&config.cluster, headers, timeout) {
            Ok(token) => feed.fetcher.started(token, &ask, now),
            Err(_) => {
                let outcome = feed.fetcher.start_failed(now);
                self.report(feed, &outcome);
            }
        }
    }

    /// Logs and counts the outcome of a fetch. Failures in a row are logged
    /// once, then every [`FAILURES_LOGGED_EVERY`]; the recovery once.
    fn report(&self, feed: &mut Feed, outcome: &Outcome) {
        let stats = &self.state.stats;
        if let Outcome::Failed(failure) = outcome {
            stats.fetch_failed();
            feed.failures = feed.failures.saturating_add(1);
            if feed.failures == 1 || feed.failures.is_multiple_of(FAILURES_LOGGED_EVERY) {
                let version = sync::read_head(&SharedData, &feed.keys).map_or(0, |h| h.version);
                log::warn!(
                    "key table fetch from cluster {} failed: {failure}; keeping version {version}, retrying every {} ms ({} failures in a row)",
                    feed.config.cluster,
                    feed.config.retry_ms,
                    feed.failures
                );
            }
            return;
        }
        stats.fetched();
        if feed.failures > 0 {
            log::info!(
                "key table fetch from cluster {} works again after {} failures",
                feed.config.cluster,
                feed.failures
            );
            feed.failures = 0;
        }
        match outcome {
            Outcome::Page { pages, keys } => {
                log::debug!("key table snapshot: page {pages} stored ({keys} keys so far)");
            }
            Outcome::Snapshot { version, keys } => {
                log::info!("key table version {version} fetched ({keys} keys, snapshot)");
            }
            Outcome::Delta { version, ops } => {
                log::info!("key table version {version} fetched (delta of {ops} changes)");
            }
            Outcome::Resync { base, have } => log::warn!(
                "delta from version {base} does not apply to version {}; asking for a snapshot",
                have.unwrap_or(0)
            ),
            Outcome::NotModified | Outcome::Failed(_) => {}
        }
    }

    /// After a table change: gauges, and reset of WebSockets whose key died.
    fn table_changed(&self, now: u64) {
        let (version, keys) = self.table_summary();
        self.state.stats.table(version, keys);
        self.close_dead_streams(now);
    }

    fn close_dead_streams(&self, now: u64) {
        let dead = match self.state.fresh_table(now) {
            Some(table) => self.state.streams.take_dead(&table, now / 1000),
            None => return,
        };
        if dead.is_empty() {
            return;
        }
        for &id in &dead {
            // The reset happens in Envoy once this callback returns.
            let closed =
                host::set_effective_context(id).is_ok() && host::reset_http_request().is_ok();
            if closed {
                log::info!("closing WebSocket stream {id}: its key was revoked or expired");
            }
        }
        let _ = host::set_effective_context(self.id);
        self.state.stats.ws_closed(dead.len());
    }

    /// Once a second: age gauge, expiry of open streams, log level.
    fn each_second(&mut self, now: u64) {
        let second = now / 1000;
        if second == self.last_second {
            return;
        }
        self.last_second = second;
        let age = now.saturating_sub(self.state.contact_ms.get()) / 1000;
        if self.state.table.borrow().is_some() {
            self.state.stats.age(age);
        }
        if !self.state.streams.is_empty() {
            self.close_dead_streams(now);
        }
        follow_host_log_level();
    }
}

/// The long-poll wait: at most a quarter of the maximum staleness. A held
/// request is no proof that the control plane is up, so the table ages from
/// the last answer; answers must come often enough that a table lives about
/// `max_staleness_seconds` after an outage begins (0 means plain polling
/// every `sync_interval_ms`, for tiny staleness settings).
fn effective_wait(feed: &FeedConfig) -> u32 {
    feed.wait_seconds.min(feed.max_staleness_seconds / 4)
}

/// Makes `log` filter like Envoy's wasm logger, so filtered lines cost nothing.
pub fn follow_host_log_level() {
    host::set_log_level(host::log_level().unwrap_or(LogLevel::Info));
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token: u32,
        headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let Some(mut feed) = self.feed.take() else {
            return;
        };
        if feed.fetcher.finish(token) && feed.leader {
            let now = now_ms();
            // A failed call (reset, oversized body) has no headers to read.
            let status = (headers > 0)
                .then(|| {
                    host::header(MapType::HttpCallResponseHeaders, ":status")
                        .ok()
                        .flatten()
                })
                .flatten()
                .and_then(|s| std::str::from_utf8(&s).ok()?.parse::<u16>().ok());
            let body = match status {
                Some(200) => host::buffer(BufferType::HttpCallResponseBody, 0, body_size)
                    .ok()
                    .flatten()
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            let outcome = feed
                .fetcher
                .on_response(&SharedData, &feed.keys, status, &body, now);
            self.report(&mut feed, &outcome);
            match outcome {
                Outcome::Snapshot { .. } | Outcome::Delta { .. }
                    if self.follows(&feed) && self.follow(&feed) =>
                {
                    self.table_changed(now);
                }
                // The next page at once (it opens a second connection, as
                // this call's is busy until we return; pages are few).
                Outcome::Page { .. } => self.poll(&mut feed, now),
                // Anything else starts on the next tick: started from here,
                // it would find this call's connection busy and open another.
                _ => {}
            }
        }
        self.feed = Some(feed);
    }

    fn on_done(&mut self) -> bool {
        if let Some(feed) = &mut self.feed {
            if feed.leader {
                feed.lease.release(&SharedData, &feed.keys);
            }
            feed.announcer.withdraw(&SharedData, &feed.keys, now_ms());
        }
        true
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        follow_host_log_level();
        let bytes = host::buffer(BufferType::PluginConfiguration, 0, size)
            .ok()
            .flatten()
            .unwrap_or_default();
        match self.configure(&bytes) {
            Ok(()) => {
                // Tables load on the first tick or the first request, not
                // here: Envoy also configures VMs that never tick nor serve.
                // Fetching waits for the first tick (clusters may not be
                // ready yet).
                self.state.clock_ms.set(now_ms());
                true
            }
            Err(e) => {
                log::error!("{e}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let Some(mut feed) = self.feed.take() else {
            return;
        };
        let now = now_ms();
        self.state.clock_ms.set(now);
        feed.leader = self.elect(&mut feed, now);
        if self.follows(&feed) && self.follow(&feed) {
            self.table_changed(now);
        }
        if feed.leader {
            if sync::take_resync(&SharedData, &feed.keys) {
                feed.fetcher.request_snapshot();
            }
            let release = Release {
                hold_ms: SNAPSHOT_HOLD_MS,
                keep_bytes: feed.config.keep_snapshot_bytes,
            };
            if sync::release_snapshot(&SharedData, &feed.keys, now, release) {
                log::debug!("every worker holds the snapshot: its pages left shared data");
            }
        }
        self.poll(&mut feed, now);
        self.feed = Some(feed);
        self.state.stats.flush();
        self.each_second(now);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        self.state.serving.set(true);
        // No table yet (a fresh VM before its first tick, or a leader that
        // kept none): load what shared data holds now rather than refuse.
        if let Some(feed) = self
            .feed
            .as_ref()
            .filter(|_| self.state.table.borrow().is_none())
        {
            if self.follow(feed) {
                self.table_changed(now_ms());
            }
        }
        Some(Box::new(Http::new(context_id, Rc::clone(&self.state))))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
