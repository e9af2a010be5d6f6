//! The root context of one VM: glue between Envoy's callbacks and the feed engine.
//!
//! Every VM (one per worker thread, one on the main thread) is a member of
//! the core's [`keygate::engine::Engine`], which does the feed: election,
//! following shared data, the leader's fetches, a VM's own first table.
//! This context configures it, drives it from the tick and from http call
//! answers ([`crate::engine_host`] is its host), and reacts to what it
//! reports: gauges and counters, requests waiting for the first table
//! ([`crate::waiting`]) decided once it is there or their wait is over, and
//! open WebSockets whose key died reset (after every table change, and every
//! second for expiry). In Envoy the leader is the main thread's VM, which
//! serves no request and so keeps no table: a big table is held once per
//! worker, not once more. While requests wait for a VM's first table it
//! ticks every [`FAST_TICK_MS`].

use crate::engine_host::EnvoyHost;
use crate::host;
use crate::http::{self, Http, Step};
use crate::state::{now_ms, unix_now, State};
use keygate::config::FilterConfig;
use keygate::decision::Policy;
use keygate::engine::usage::Report;
use keygate::engine::{Changes, Engine, Member};
use keygate::table::KeyTable;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, LogLevel, MapType};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

/// The tick period while requests wait for this VM's first table.
const FAST_TICK_MS: u64 = 5;

/// The root context.
pub struct Root {
    id: u32,
    state: Rc<State>,
    /// The feed; `None` until configured.
    engine: RefCell<Option<Engine>>,
    /// Unix second of the last once-a-second chores.
    last_second: u64,
    /// True while ticking every [`FAST_TICK_MS`].
    fast_tick: Cell<bool>,
}

impl Root {
    pub fn new(id: u32) -> Root {
        Root {
            id,
            state: Rc::new(State::new()),
            engine: RefCell::new(None),
            last_second: 0,
            fast_tick: Cell::new(false),
        }
    }

    fn configure(&mut self, bytes: &[u8]) -> Result<(), String> {
        let config = FilterConfig::from_json_and_env(bytes).map_err(|e| e.to_string())?;
        let seed = (unix_now().as_nanos() as u64) ^ u64::from(self.id).rotate_right(16);
        let engine = Engine::new(&EnvoyHost, config.feed.clone(), seed);
        let feed = engine.config();
        host::set_tick_period(Duration::from_millis(u64::from(feed.sync_interval_ms)))
            .map_err(|s| format!("cannot set the tick period: {s:?}"))?;
        self.state.usage.configure(feed, &config.usage);
        *self.state.policy.borrow_mut() = Some(Policy::from(&config));
        self.state
            .max_staleness_ms
            .set(u64::from(feed.max_staleness_seconds) * 1000);
        self.state
            .first_table_wait_ms
            .set(u64::from(feed.first_table_wait_ms));
        *self.state.recheck.borrow_mut() = Some(engine.recheck());
        *self.engine.borrow_mut() = Some(engine);
        Ok(())
    }

    /// What the engine needs to know about this VM now.
    fn member(&self) -> Member {
        Member {
            serves: self.state.serving.get(),
            waiting: !self.state.waiting.is_empty(),
        }
    }

    /// Runs `step` on the engine with this VM's table; `None` before the
    /// configuration.
    fn drive(
        &self,
        step: impl FnOnce(&mut Engine, &mut Option<KeyTable>, Member) -> Changes,
    ) -> Option<Changes> {
        let member = self.member();
        let mut engine = self.engine.borrow_mut();
        let engine = engine.as_mut()?;
        let mut table = self.state.table.borrow_mut();
        Some(step(engine, &mut table, member))
    }

    /// Counters, contact time and, after a table change, gauges, waiting
    /// requests decided and reset of WebSockets whose key died.
    fn apply(&self, changes: Changes, now: u64) {
        let stats = &self.state.stats;
        (0..changes.fetched).for_each(|_| stats.fetched());
        (0..changes.failed).for_each(|_| stats.fetch_failed());
        if let Some(contact) = changes.contact_ms {
            self.state.contact_ms.set(contact);
        }
        if changes.table {
            let (version, keys) = self.table_summary();
            stats.table(version, keys);
            self.settle(self.state.waiting.take_all());
            self.close_dead_streams(now);
        }
    }

    fn table_summary(&self) -> (u64, usize) {
        self.state
            .table
            .borrow()
            .as_ref()
            .map_or((0, 0), |t| (t.version(), t.len()))
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
    fn pace_ticks(&self, fast: bool) {
        if fast == self.fast_tick.get() {
            return;
        }
        let Some(sync_interval_ms) = self
            .engine
            .borrow()
            .as_ref()
            .map(|e| e.config().sync_interval_ms)
        else {
            return;
        };
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
        let policy = self.state.policy.borrow();
        let dead = match (policy.as_ref(), self.state.fresh_table(now)) {
            (Some(policy), Some(table)) => self.state.streams.take_dead(policy, &table, now / 1000),
            _ => return,
        };
        drop(policy);
        if dead.is_empty() {
            return;
        }
        for &id in &dead {
            // The reset happens in Envoy once this callback returns.
            let closed =
                host::set_effective_context(id).is_ok() && host::reset_http_request().is_ok();
            if closed {
                log::info!("closing WebSocket stream {id}: its key no longer allows it");
            }
        }
        let _ = host::set_effective_context(self.id);
        self.state.stats.ws_closed(dead.len());
    }

    /// The leader's usage reporting, on every tick (it also ships its own
    /// counts); other VMs ship theirs once a second ([`Root::each_second`]).
    fn report_usage(&self, now: u64) {
        let engine = self.engine.borrow();
        let Some(engine) = engine.as_ref() else {
            return;
        };
        let leads = engine.leads();
        let usage = &self.state.usage;
        if leads {
            usage.ship(true);
        }
        let report = usage.report(leads, now, || engine.key_set(&EnvoyHost));
        self.usage_report(&report);
    }

    /// Stats and log lines of a reporter call.
    fn usage_report(&self, report: &Report) {
        if *report == Report::default() && self.state.usage.pending() == 0 {
            return;
        }
        if let Some(status) = report.refused_status {
            log::warn!("the control plane refused a usage batch with status {status}; dropped");
        }
        if report.no_random {
            log::warn!("no random batch id (random_get failed): usage counts wait");
        }
        self.state.stats.usage(report, self.state.usage.pending());
    }

    /// Handles the answer to a usage call; false when `token` is not one.
    fn usage_answer(&self, token: u32, headers: usize) -> bool {
        let status = call_status(headers);
        match self.state.usage.on_response(token, status, now_ms()) {
            Some(report) => {
                self.usage_report(&report);
                true
            }
            None => false,
        }
    }

    /// Once a second: age gauge, expiry of open streams, log level, this
    /// VM's usage counts shipped.
    fn each_second(&mut self, now: u64) {
        let second = now / 1000;
        if second == self.last_second {
            return;
        }
        self.last_second = second;
        let leads = self.engine.borrow().as_ref().is_some_and(Engine::leads);
        if !leads {
            self.state.usage.ship(false);
        }
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

/// The status of an http call's answer (`None`: no HTTP answer).
fn call_status(headers: usize) -> Option<u16> {
    // A failed call (reset, oversized body) has no headers to read.
    (headers > 0)
        .then(|| {
            host::header(MapType::HttpCallResponseHeaders, ":status")
                .ok()
                .flatten()
        })
        .flatten()
        .and_then(|s| std::str::from_utf8(&s).ok()?.parse::<u16>().ok())
}

/// The status and (for a 200) body of an http call's answer.
fn call_response(headers: usize, body_size: usize) -> (Option<u16>, Vec<u8>) {
    let status = call_status(headers);
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
        if self.usage_answer(token, headers) {
            return;
        }
        let changes = self.drive(|engine, table, member| {
            engine.on_response(&EnvoyHost, table, member, token, || {
                call_response(headers, body_size)
            })
        });
        if let Some(changes) = changes.filter(|c| *c != Changes::default()) {
            self.apply(changes, now_ms());
        }
    }

    fn on_done(&mut self) -> bool {
        // Requests still waiting are decided now (503 without a table).
        self.settle(self.state.waiting.take_all());
        self.state.usage.ship(false);
        if let Some(engine) = self.engine.get_mut() {
            engine.stop(&EnvoyHost);
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
        let now = now_ms();
        self.state.clock_ms.set(now);
        let Some(mut changes) =
            self.drive(|engine, table, member| engine.tick(&EnvoyHost, table, member))
        else {
            return;
        };
        changes.table |= self.state.caught_up.take();
        self.apply(changes, now);
        self.settle(self.state.waiting.take_expired(now));
        self.pace_ticks(!self.state.waiting.is_empty());
        self.state.stats.flush();
        self.report_usage(now);
        self.each_second(now);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        self.state.serving.set(true);
        // No table yet (a fresh VM before its first tick, or a leader that
        // kept none): load what shared data holds now rather than refuse.
        if self.state.table.borrow().is_none() {
            let changes = self.drive(|engine, table, _| engine.follow(&EnvoyHost, table));
            if let Some(changes) = changes {
                let changed = changes.table;
                self.apply(changes, now_ms());
                if changed {
                    let _ = host::set_effective_context(context_id);
                } else if self.state.first_table_wait_ms.get() > 0 {
                    // Its request may wait: the table is fetched on a tick soon.
                    self.pace_ticks(true);
                }
            }
        }
        Some(Box::new(Http::new(context_id, Rc::clone(&self.state))))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
