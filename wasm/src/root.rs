//! The root context of one VM: configuration, the tick, the feed.
//!
//! Every VM (one per worker thread, one on the main thread) ticks every
//! `feed.sync_interval_ms`: it takes or renews the fetch lease and, holding
//! it, keeps one request to the control plane in flight, publishing what
//! comes back to shared data. So an Envoy process has one fetch stream
//! whatever its concurrency, with no bootstrap extension (it works under
//! Istio's `WasmPlugin`). Who leads is settled through [`keygate::engine::followers`]:
//! every VM starts as a candidate; a candidate that sees a live candidate of
//! its configuration started before it becomes a follower, and candidates
//! claim the lease only after [`CLAIM_GRACE_MS`], so that every VM has
//! announced itself by then.
//! In Envoy the first is the main thread's VM, which serves no request and so
//! keeps no table: a big table is held once per worker, not once more.
//! Followers keep the shared table in their own (as does any VM once it
//! serves a request). While requests wait for a VM's first table
//! ([`crate::waiting`]) it ticks every [`FAST_TICK_MS`] and, if shared data
//! has no table either, fetches one itself at once ([`keygate::engine::bootstrap`]);
//! they are decided as soon as the table is there. After every table
//! change, and every second for expiry, open WebSockets whose key died are
//! reset.

use crate::host;
use crate::host::Status;
use crate::http::{self, Http, Step};
use crate::shared::SharedData;
use crate::state::{now_ms, unix_now, State};
use keygate::config::{FeedConfig, FilterConfig};
use keygate::decision::Policy;
use keygate::engine::bootstrap::Bootstrap;
use keygate::engine::fetch::{Ask, Fetcher, Outcome};
use keygate::engine::followers::{self, Announcer, Role};
use keygate::engine::request::FeedRequest;
use keygate::engine::store::SharedKeys;
use keygate::engine::sync::{self, Lease, Release, Synced};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, LogLevel, MapType};
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;
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
/// The tick period while requests wait for this VM's first table.
const FAST_TICK_MS: u64 = 5;
/// A VM without any table retries its own fetch at least this often, so
/// that requests waiting for it see a control plane that just came up.
const BOOTSTRAP_RETRY_MS: u64 = 250;

/// The feed side of a configured root.
struct Feed {
    config: FeedConfig,
    keys: SharedKeys,
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
    /// This VM's own first snapshot fetch, while it needs one.
    bootstrap: Option<Bootstrap>,
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
    /// Unix ms of the configuration, until the first table is logged.
    first_table_from: Cell<Option<u64>>,
    /// True while ticking every [`FAST_TICK_MS`].
    fast_tick: Cell<bool>,
}

impl Root {
    pub fn new(id: u32) -> Root {
        Root {
            id,
            state: Rc::new(State::new()),
            feed: None,
            last_second: 0,
            stuck_at: Cell::new(None),
            first_table_from: Cell::new(None),
            fast_tick: Cell::new(false),
        }
    }

    fn configure(&mut self, bytes: &[u8]) -> Result<(), String> {
        let mut config = FilterConfig::from_json_and_env(bytes).map_err(|e| e.to_string())?;
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
        let keys = SharedKeys::new(&format!(
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
        self.state
            .first_table_wait_ms
            .set(u64::from(feed.first_table_wait_ms));
        self.first_table_from.set(Some(now));
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
            bootstrap: None,
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
        let fresh = format!("{:x}", (unix_now().as_nanos() as u64) ^ u64::from(self.id));
        let client = sync::client_id(&SharedData, &feed.keys, &fresh);
        match dispatch(&feed.config, &ask, feed.config.wait_seconds, Some(&client)) {
            Ok(token) => feed.fetcher.started(token, &ask, now),
            Err(_) => {
                let outcome = feed.fetcher.start_failed(now);
                self.report(feed, &outcome);
            }
        }
    }

    /// Starts this VM's own snapshot fetch (or its next page) while
    /// requests wait for a first table that shared data does not have (and
    /// this VM does not lead).
    fn bootstrap(&self, feed: &mut Feed, now: u64) {
        let needed = (feed.bootstrap.is_some() || !self.state.waiting.is_empty())
            && !feed.leader
            && self.state.table.borrow().is_none()
            && sync::read_head(&SharedData, &feed.keys).is_none();
        if !needed {
            feed.bootstrap = None;
            return;
        }
        let retry_ms = u64::from(feed.config.retry_ms).min(BOOTSTRAP_RETRY_MS);
        let boot = feed
            .bootstrap
            .get_or_insert_with(|| Bootstrap::new(retry_ms));
        if !boot.due(now) {
            return;
        }
        let ask = boot.ask();
        match dispatch(&feed.config, &ask, 0, None) {
            Ok(token) => boot.started(token, &ask, now),
            Err(_) => boot.start_failed(now),
        }
    }

    /// Handles the answer to this VM's own snapshot fetch.
    fn bootstrapped(&self, feed: &mut Feed, status: Option<u16>, body: &[u8], now: u64) {
        let Some(boot) = feed.bootstrap.as_mut() else {
            return;
        };
        let answer = boot.on_response(status, body, now);
        if matches!(answer.0, Outcome::Failed(_)) {
            self.state.stats.fetch_failed();
        } else {
            self.state.stats.fetched();
        }
        match answer {
            (_, Some(table)) => {
                feed.bootstrap = None;
                if self.state.table.borrow().is_some() {
                    return;
                }
                log::info!(
                    "key table version {} ({} keys) fetched by this VM directly: no table in shared data yet",
                    table.version(),
                    table.len()
                );
                *self.state.table.borrow_mut() = Some(table);
                self.state.contact_ms.set(now);
                self.table_changed(now);
            }
            (Outcome::Page { .. }, None) => self.bootstrap(feed, now),
            (Outcome::Failed(failure), None) => {
                log::debug!("this VM's own key table fetch failed: {failure}");
                if self.state.waiting.is_empty() {
                    // Nobody waits: the leader's fetch will do.
                    feed.bootstrap = None;
                }
            }
            _ => {}
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
            Outcome::NewKeySet { key_set } => log::warn!(
                "snapshot page of another key set ({key_set}) than the pages before it; starting the snapshot over"
            ),
            Outcome::NotModified | Outcome::Failed(_) => {}
        }
    }

    /// After a table change: gauges, waiting requests decided, and reset of
    /// WebSockets whose key died.
    fn table_changed(&self, now: u64) {
        let (version, keys) = self.table_summary();
        self.state.stats.table(version, keys);
        if let Some(configured) = self.first_table_from.take() {
            log::info!(
                "first key table (version {version}, {keys} keys) loaded {} ms after this VM was configured",
                now.saturating_sub(configured)
            );
        }
        self.settle(self.state.waiting.take_all());
        self.close_dead_streams(now);
    }

    /// Decides requests that waited for the first table (it came, or their
    /// wait is over) and lets the allowed ones go on.
    fn settle(&self, ids: Vec<u32>) {
        if ids.is_empty() {
            return;
        }
        for id in ids {
            // A request whose stream ended is no longer known to the host.
            if host::set_effective_context(id).is_err() {
                continue;
            }
            if http::decide(&self.state, id, false) == Step::Continue
                && host::resume_http_request().is_err()
            {
                log::warn!("could not resume request {id} after its wait for the key table");
            }
        }
        let _ = host::set_effective_context(self.id);
    }

    /// Ticks every [`FAST_TICK_MS`] when `fast`, at the configured period
    /// otherwise.
    fn pace_ticks(&self, fast: bool, sync_interval_ms: u32) {
        if fast == self.fast_tick.get() {
            return;
        }
        let period = if fast {
            FAST_TICK_MS
        } else {
            u64::from(sync_interval_ms)
        };
        if host::set_tick_period(Duration::from_millis(period)).is_ok() {
            self.fast_tick.set(fast);
        }
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

/// Starts the feed request for `ask` (see [`FeedRequest::new`]).
fn dispatch(
    config: &FeedConfig,
    ask: &Ask,
    wait_seconds: u32,
    client: Option<&str>,
) -> Result<u32, Status> {
    let request = FeedRequest::new(config, ask, wait_seconds, client);
    host::dispatch_http_call(
        &request.cluster,
        request.headers().to_vec(),
        Duration::from_millis(request.timeout_ms),
    )
}

/// The status and (for a 200) body of an http call's answer.
fn call_response(headers: usize, body_size: usize) -> (Option<u16>, Vec<u8>) {
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
    (status, body)
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
        if feed.bootstrap.as_mut().is_some_and(|b| b.finish(token)) {
            let (status, body) = call_response(headers, body_size);
            self.bootstrapped(&mut feed, status, &body, now_ms());
        } else if feed.fetcher.finish(token) && feed.leader {
            let now = now_ms();
            let (status, body) = call_response(headers, body_size);
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
        // Requests still waiting are decided now (503 without a table).
        self.settle(self.state.waiting.take_all());
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
        self.bootstrap(&mut feed, now);
        self.settle(self.state.waiting.take_expired(now));
        let waiting = !self.state.waiting.is_empty();
        self.pace_ticks(waiting, feed.config.sync_interval_ms);
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
                let _ = host::set_effective_context(context_id);
            } else if self.state.first_table_wait_ms.get() > 0 {
                // Its request may wait: the table is fetched on a tick soon.
                self.pace_ticks(true, feed.config.sync_interval_ms);
            }
        }
        Some(Box::new(Http::new(context_id, Rc::clone(&self.state))))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
