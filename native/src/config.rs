//! One filter configuration on the main thread: its parsing, and what its
//! timer's ticks and its callouts' answers drive.
//!
//! `on_http_filter_config_new` parses the same JSON as the wasm filter
//! (`keygate::config::FilterConfig`; the feed token from the environment
//! variable `feed.token_env` names, read from Envoy's process environment),
//! defines the stats and starts the [`Timer`]. A tick starts the next feed
//! request when one is due ([`FeedLoop`], config-level HTTP callouts),
//! decides requests whose wait for the first table is over, adds the
//! requests' counts to Envoy's stats, and once a second wakes WebSockets
//! whose key expired and records the table's age. A configuration made
//! while another of the same feed runs (a reload) starts with that one's
//! table, and follows the feed with its own stream from there. Each tick
//! also takes every worker's usage counts into the configuration's reporter
//! (`keygate::engine::usage`), which sends its batches through the same
//! config-level callouts.

use crate::abi::ConfigEnvoy;
use crate::feed_loop::FeedLoop;
use crate::host::{self, ConfigScheduler};
use crate::shared::Shared;
use crate::stats::Stats;
use crate::timer::Timer;
use crate::usage::Usage;
use crate::{log, now_ms};
use keygate::config::FilterConfig;
use keygate::decision::Policy;
use keygate::engine::driver::lower_wait;
use keygate::engine::usage::{Report, Reporter};
use keygate::feed::KeySet;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Duration;

/// While requests wait for the first table, a failed fetch is retried at
/// least this often.
const WAITING_RETRY_MS: u64 = 250;

/// The main thread's state.
struct MainThread {
    feed: FeedLoop,
    /// Unix second of the last once-a-second chores.
    last_second: u64,
    /// The usage reporter (`None` with usage off).
    reporter: Option<Reporter>,
}

/// The module's side of one filter configuration.
pub struct ConfigHandle {
    envoy: ConfigEnvoy,
    pub shared: Arc<Shared>,
    /// Main thread only (a mutex so that the handle is `Sync`; never contended).
    state: Mutex<MainThread>,
    _timer: Timer,
}

// SAFETY: workers only read `shared` (in `on_http_filter_new`); `envoy` is
// used by the main thread's hooks alone, the one thread Envoy calls the
// configuration's hooks on; the main thread's state is behind a mutex.
unsafe impl Sync for ConfigHandle {}

impl ConfigHandle {
    /// Parses `json` and starts the configuration; the error names the field.
    pub fn new(envoy: ConfigEnvoy, json: &[u8]) -> Result<ConfigHandle, String> {
        let mut config = FilterConfig::from_json_and_env(json).map_err(|e| e.to_string())?;
        lower_wait(&mut config.feed, &log::line);
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
        let tick = Duration::from_millis(u64::from(feed.sync_interval_ms));
        let reporter = config
            .usage
            .enabled
            .then(|| Reporter::new(&feed, &config.usage, now_ms()));
        Ok(ConfigHandle {
            envoy,
            shared: Arc::clone(&shared),
            state: Mutex::new(MainThread {
                feed: FeedLoop::new(feed, client, (!adopted).then(now_ms)),
                last_second: 0,
                reporter,
            }),
            _timer: Timer::start(scheduler, tick, shared),
        })
    }

    /// The main thread's state, unless a hook up the stack holds it (a
    /// callback Envoy made from inside a call of ours). A panic caught while
    /// it was held left it consistent enough to go on: every change is a
    /// plain store.
    fn main_thread(&self) -> Option<MutexGuard<'_, MainThread>> {
        match self.state.try_lock() {
            Ok(state) => Some(state),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// A tick of the timer (main thread).
    pub fn on_tick(&self) {
        let Some(mut state) = self.main_thread() else {
            return;
        };
        let now = now_ms();
        if !self.shared.ever_loaded() && self.shared.has_waiting() {
            state.feed.hurry(WAITING_RETRY_MS);
        }
        state.feed.poll(self.envoy, &self.shared, now);
        self.shared.wake_waiting(Some(now));
        self.shared.stats.flush(self.envoy);
        self.each_second(&mut state, now);
        self.report_usage(&mut state, now);
    }

    /// The answer to callout `id` (main thread): `status` `None` when the
    /// call failed without an HTTP answer.
    pub fn on_answer(&self, id: u64, status: Option<u16>, body: &[u8]) {
        let Some(mut state) = self.main_thread() else {
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
        let answer = (status, body);
        state
            .feed
            .on_answer(self.envoy, &self.shared, id, answer, now_ms());
    }

    /// Every worker's counts into the reporter, and its batches out.
    fn report_usage(&self, state: &mut MainThread, now: u64) {
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

    /// Once a second: age gauge and expiry of open WebSockets.
    fn each_second(&self, state: &mut MainThread, now: u64) {
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
}
