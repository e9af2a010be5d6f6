//! One filter configuration on the main thread: its parsing, its timer, and
//! the process's one fetch stream.
//!
//! `on_http_filter_config_new` parses the same JSON as the wasm filter
//! (`keygate::config::FilterConfig`; the feed token from the environment
//! variable `feed.token_env` names, read from Envoy's process environment),
//! defines the stats and starts a small timer thread that commits a tick to
//! the configuration's scheduler every `feed.sync_interval_ms` (every 5 ms
//! while requests wait for the first table): Envoy runs
//! each tick on the main thread (`on_http_filter_config_scheduled`). A tick
//! starts the next feed request when one is due (config-level HTTP
//! callouts), decides requests whose wait for the first table is over,
//! adds the requests' counts to Envoy's stats, and once a second wakes
//! WebSockets whose key expired and records the table's age. The fetching itself is the feed engine's (`keygate::engine::fetch`,
//! the wasm filter's loop too) with a table-direct sink: a snapshot is
//! built page by page, a delta applied to a copy of the table, no body kept.
//! An answer ([`ConfigHandle::on_answer`]) that brings a new table
//! publishes it to every worker at once, wakes the waiting requests and the
//! WebSockets whose key died. A configuration made while another of the
//! same feed runs (a reload) starts with that one's table, and follows the
//! feed with its own stream from there. Each tick also takes every
//! worker's usage counts into the configuration's reporter
//! (`keygate::engine::usage`), which sends its batches through the same
//! config-level callouts.

use crate::abi::ConfigEnvoy;
use crate::host::{self, ConfigScheduler};
use crate::shared::Shared;
use crate::stats::Stats;
use crate::usage::Usage;
use crate::{log, now_ms};
use keygate::config::{FeedConfig, FilterConfig};
use keygate::decision::Policy;
use keygate::engine::fetch::{Fetcher, Outcome};
use keygate::engine::request::FeedRequest;
use keygate::engine::sink::{TablePaging, TableSink};
use keygate::engine::usage::{Report, Reporter};
use keygate::feed::KeySet;
use keygate::table::KeyTable;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::thread;
use std::time::Duration;

/// Event of the configuration's scheduler: a tick of the timer.
pub const EVENT_TICK: u64 = 1;
/// The tick period while requests wait for the first table, so that their
/// wait ends on time.
const FAST_TICK: Duration = Duration::from_millis(5);
/// While requests wait for the first table, a failed fetch is retried at
/// least this often.
const WAITING_RETRY_MS: u64 = 250;
/// A streak of fetch failures is logged at its start and then this often.
const FAILURES_LOGGED_EVERY: u32 = 60;

/// The main thread's state of the feed.
struct FeedState {
    /// The engine's fetch loop, building the table itself (no store).
    feed: Fetcher<TablePaging>,
    /// Fetch failures in a row.
    failures: u32,
    /// Unix second of the last once-a-second chores.
    last_second: u64,
    /// Unix ms of the configuration, until the first table is logged.
    first_table_from: Option<u64>,
    /// The usage reporter (`None` with usage off).
    reporter: Option<Reporter>,
}

/// The timer thread's handle. Dropping it stops the ticks: the scheduler
/// is deleted under the lock the thread commits with, and the thread is
/// woken and joined, so no module code runs once the configuration is gone
/// (the module could be unloaded then).
struct Timer {
    scheduler: Arc<Mutex<Option<ConfigScheduler>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Timer {
    /// Ticks every `period`, every [`FAST_TICK`] while requests of
    /// `shared` wait for the first table.
    fn start(scheduler: ConfigScheduler, period: Duration, shared: Arc<Shared>) -> Timer {
        let scheduler = Arc::new(Mutex::new(Some(scheduler)));
        let ticking = Arc::clone(&scheduler);
        let spawned = thread::Builder::new()
            .name("keygate-timer".into())
            .spawn(move || loop {
                let fast = !shared.ever_loaded() && shared.has_waiting();
                thread::park_timeout(if fast { FAST_TICK } else { period });
                let guard = ticking
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match guard.as_ref() {
                    Some(s) => s.commit(EVENT_TICK),
                    None => return,
                }
            });
        if spawned.is_err() {
            log::error("could not start the timer thread: the key table will not be fetched");
        }
        Timer {
            scheduler,
            thread: spawned.ok(),
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        let taken = self
            .scheduler
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(taken);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// The module's side of one filter configuration.
pub struct ConfigHandle {
    envoy: ConfigEnvoy,
    pub shared: Arc<Shared>,
    feed_config: FeedConfig,
    /// Names this Envoy's fetch stream to the control plane.
    client: String,
    /// Main thread only (a mutex so that the handle is `Sync`; never contended).
    state: Mutex<FeedState>,
    _timer: Timer,
}

// SAFETY: workers only read `shared` (in `on_http_filter_new`); `envoy` is
// used by the main thread's hooks alone, the one thread Envoy calls the
// configuration's hooks on; the feed state is behind a mutex.
unsafe impl Sync for ConfigHandle {}

/// The long-poll wait: at most a quarter of the maximum staleness (a held
/// request is no proof that the control plane is up).
fn effective_wait(feed: &FeedConfig) -> u32 {
    feed.wait_seconds.min(feed.max_staleness_seconds / 4)
}

impl ConfigHandle {
    /// Parses `json` and starts the configuration; the error names the field.
    pub fn new(envoy: ConfigEnvoy, json: &[u8]) -> Result<ConfigHandle, String> {
        let mut config = FilterConfig::from_json_and_env(json).map_err(|e| e.to_string())?;
        let wait = effective_wait(&config.feed);
        if wait < config.feed.wait_seconds {
            log::info(&format!(
                "long-poll wait lowered from {} s to {wait} s: answers must come well within feed.max_staleness_seconds ({} s)",
                config.feed.wait_seconds, config.feed.max_staleness_seconds
            ));
            config.feed.wait_seconds = wait;
        }
        let feed = config.feed.clone();
        let shared = Arc::new(Shared::new(
            Policy::from(&config),
            Stats::define(envoy),
            Usage::new(&config.usage),
            u64::from(feed.max_staleness_seconds) * 1000,
            u64::from(feed.first_table_wait_ms),
        ));
        let feed_key = format!("{}|{}|{}", feed.cluster, feed.authority, feed.path);
        let adopted = shared.join_peers(&feed_key);
        if let Some(table) = shared.table().filter(|_| adopted) {
            log::info(&format!(
                "starting with key table version {} ({} keys) of a running configuration of this feed",
                table.version(),
                table.len()
            ));
            shared.stats.table(envoy, table.version(), table.len());
        }
        let scheduler = ConfigScheduler::new(envoy)
            .ok_or_else(|| "Envoy gave no scheduler to the configuration".to_string())?;
        let client = KeySet::random()
            .map(KeySet::to_hex)
            .map_err(|e| format!("no random client id: {e}"))?;
        let tick = u64::from(feed.sync_interval_ms);
        Ok(ConfigHandle {
            envoy,
            shared: Arc::clone(&shared),
            client,
            state: Mutex::new(FeedState {
                feed: Fetcher::new(tick, u64::from(feed.retry_ms)),
                failures: 0,
                last_second: 0,
                first_table_from: (!adopted).then(now_ms),
                reporter: config
                    .usage
                    .enabled
                    .then(|| Reporter::new(&feed, &config.usage, now_ms())),
            }),
            feed_config: feed,
            _timer: Timer::start(scheduler, Duration::from_millis(tick), Arc::clone(&shared)),
        })
    }

    /// The feed state, unless a hook up the stack holds it (a callback Envoy
    /// made from inside a call of ours). A panic caught while it was held
    /// left it consistent enough to go on: every change is a plain store.
    fn feed_state(&self) -> Option<MutexGuard<'_, FeedState>> {
        match self.state.try_lock() {
            Ok(state) => Some(state),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// A tick of the timer (main thread).
    pub fn on_tick(&self) {
        let Some(mut state) = self.feed_state() else {
            return;
        };
        let now = now_ms();
        if !self.shared.ever_loaded() && self.shared.has_waiting() {
            state.feed.hurry(WAITING_RETRY_MS);
        }
        self.poll(&mut state, now);
        self.shared.wake_waiting(Some(now));
        self.shared.stats.flush(self.envoy);
        self.each_second(&mut state, now);
        self.report_usage(&mut state, now);
    }

    /// Every worker's counts into the reporter, and its batches out.
    fn report_usage(&self, state: &mut FeedState, now: u64) {
        let Some(reporter) = state.reporter.as_mut() else {
            return;
        };
        reporter.merge(self.shared.usage.take());
        let shared = &self.shared;
        let report = reporter.tick(
            now,
            || shared.table().map(|t| t.key_set()),
            || KeySet::random().ok().map(|k| k.0),
            |request| host::post_usage(self.envoy, request).ok(),
        );
        self.usage_report(&report, reporter.pending());
    }

    /// Stats and log lines of a reporter call.
    fn usage_report(&self, report: &Report, pending: usize) {
        if let Some(status) = report.refused_status {
            log::warn(&format!(
                "the control plane refused a usage batch with status {status}; dropped"
            ));
        }
        if report.no_random {
            log::warn("no random batch id (the OS random generator failed): usage counts wait");
        }
        if *report != Report::default() || pending > 0 {
            self.shared.stats.usage(self.envoy, report, pending);
        }
    }

    /// Starts the next feed request if one is due.
    fn poll(&self, state: &mut FeedState, now: u64) {
        if !state.feed.due(now) {
            return;
        }
        let table = self.shared.table();
        let ask = state
            .feed
            .ask_from(table.as_deref().map(|t| (t.version(), t.key_set())));
        // A snapshot page is answered at once: no wait.
        let wait = if ask.since == 0 {
            0
        } else {
            self.feed_config.wait_seconds
        };
        let request = FeedRequest::new(&self.feed_config, &ask, wait, Some(&self.client));
        match host::callout(self.envoy, &request) {
            Ok(id) => state.feed.started(id, &ask, now),
            Err(code) => {
                log::debug(&format!("feed callout not started (result {code})"));
                let outcome = state.feed.start_failed(now);
                self.report(state, &outcome, None);
            }
        }
    }

    /// The answer to callout `id` (main thread): `status` `None` when the
    /// call failed without an HTTP answer.
    pub fn on_answer(&self, id: u64, status: Option<u16>, body: &[u8]) {
        let Some(mut state) = self.feed_state() else {
            return;
        };
        let usage = state.reporter.as_mut().and_then(|r| {
            let report = r.on_response(id, status, now_ms())?;
            Some((report, r.pending()))
        });
        if let Some((report, pending)) = usage {
            self.usage_report(&report, pending);
            return;
        }
        if !state.feed.finish(id) {
            return;
        }
        let now = now_ms();
        let table = self.shared.table();
        let mut sink = TableSink::new(table.as_deref());
        let outcome = state.feed.on_answer(&mut sink, status, body, now);
        let next = sink.into_table();
        drop(table);
        self.report(&mut state, &outcome, next.as_ref().map(KeyTable::len));
        if let Some(next) = next {
            self.shared.publish(next, now);
            self.table_changed(&mut state, now);
        } else if outcome == Outcome::NotModified {
            self.shared.contact(now);
        }
        // The next request at once when due (a page, or a long-poll that
        // was answered: the control plane counts our next `since` as the
        // acknowledgement of what we just applied).
        self.poll(&mut state, now);
    }

    /// After a new table: gauges, waiting requests decided, and WebSockets
    /// whose key died woken.
    fn table_changed(&self, state: &mut FeedState, now: u64) {
        let Some(table) = self.shared.table() else {
            return;
        };
        self.shared
            .stats
            .table(self.envoy, table.version(), table.len());
        if let Some(configured) = state.first_table_from.take() {
            log::info(&format!(
                "first key table (version {}, {} keys) loaded {} ms after the configuration, shared by every worker",
                table.version(),
                table.len(),
                now.saturating_sub(configured)
            ));
        }
        self.shared.wake_waiting(None);
        self.shared.wake_dead_websockets(&table, now / 1000);
    }

    /// Once a second: age gauge and expiry of open WebSockets.
    fn each_second(&self, state: &mut FeedState, now: u64) {
        let second = now / 1000;
        if second == state.last_second {
            return;
        }
        state.last_second = second;
        if let Some(table) = self.shared.fresh_table(now).as_deref() {
            self.shared.wake_dead_websockets(table, second);
        }
        if self.shared.ever_loaded() {
            let age = now.saturating_sub(self.shared.contact_ms()) / 1000;
            self.shared.stats.age(self.envoy, age);
        }
    }

    /// Logs and counts the outcome of a fetch. Failures in a row are logged
    /// once, then every [`FAILURES_LOGGED_EVERY`]; the recovery once.
    /// `keys`: the size of the new table, if the answer brought one.
    fn report(&self, state: &mut FeedState, outcome: &Outcome, keys: Option<usize>) {
        let cluster = &self.feed_config.cluster;
        if let Outcome::Failed(failure) = outcome {
            self.shared.stats.fetched(self.envoy, false);
            state.failures = state.failures.saturating_add(1);
            if state.failures == 1 || state.failures.is_multiple_of(FAILURES_LOGGED_EVERY) {
                let version = self.shared.table().map_or(0, |t| t.version());
                log::warn(&format!(
                    "key table fetch from cluster {cluster} failed: {failure}; keeping version {version}, retrying every {} ms ({} failures in a row)",
                    self.feed_config.retry_ms, state.failures
                ));
            }
            return;
        }
        self.shared.stats.fetched(self.envoy, true);
        if state.failures > 0 {
            log::info(&format!(
                "key table fetch from cluster {cluster} works again after {} failures",
                state.failures
            ));
            state.failures = 0;
        }
        match outcome {
            Outcome::Snapshot { version, .. } | Outcome::Delta { version, .. } => {
                let kind = if matches!(outcome, Outcome::Snapshot { .. }) {
                    "snapshot"
                } else {
                    "delta"
                };
                log::info(&format!(
                    "key table version {version} ({} keys) fetched ({kind})",
                    keys.unwrap_or(0)
                ));
            }
            Outcome::Page { pages, keys } if log::debug_enabled() => log::debug(&format!(
                "key table snapshot: page {pages} added ({keys} keys so far)"
            )),
            Outcome::Resync { base, have } => log::warn(&format!(
                "delta from version {base} does not apply to version {}; asking for a snapshot",
                have.unwrap_or(0)
            )),
            Outcome::NewKeySet { key_set } => log::warn(&format!(
                "snapshot page of another key set ({key_set}) than the pages before it; starting the snapshot over"
            )),
            _ => {}
        }
    }
}
