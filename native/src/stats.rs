//! Envoy stats through the ABI's metrics callbacks. Envoy shows them under
//! the filter's metrics namespace (`dynamicmodulescustom.<name>` by default).
//!
//! The names are the wasm filter's: counters `keygate_allowed`,
//! `keygate_denied_<reason>`, `keygate_waited`, `keygate_fetches`,
//! `keygate_fetch_failures`, `keygate_ws_closed`; gauges
//! `keygate_table_version`, `keygate_table_keys`, `keygate_table_age_seconds`;
//! usage: counters `keygate_usage_batches_sent`, `keygate_usage_batches_dropped`,
//! `keygate_usage_batches_failed`, `keygate_usage_cost_malformed`,
//! `keygate_usage_cost_clamped`, gauge `keygate_usage_batches_pending`.
//! Envoy freezes stat creation once the configuration is made, so every
//! metric is defined in `on_http_filter_config_new`; a metric Envoy refused
//! to define is skipped.
//!
//! The counters a request moves (allowed, denied, waited, WebSocket closed,
//! cost malformed or clamped) are counted in the module, with one relaxed
//! atomic add, and added to Envoy's on the main thread's tick
//! ([`Stats::flush`]), as the wasm filter does: a request makes no metric
//! callback.

use crate::abi::ConfigEnvoy;
use crate::host;
use keygate::decision::DenyReason;
use keygate::engine::usage::Report;
use std::sync::atomic::{AtomicU64, Ordering};

/// A counter requests move: Envoy's id and what was counted since the
/// last flush.
#[derive(Debug, Default)]
struct Counter {
    id: Option<usize>,
    pending: AtomicU64,
}

impl Counter {
    fn define(config: ConfigEnvoy, name: &str) -> Counter {
        Counter {
            id: host::define_metric(config, name, false),
            pending: AtomicU64::new(0),
        }
    }

    fn add(&self) {
        if self.id.is_some() {
            self.pending.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Adds what was counted since the last flush to Envoy's counter.
    fn flush(&self, config: ConfigEnvoy) {
        let n = self.pending.swap(0, Ordering::Relaxed);
        if n > 0 {
            Stats::on_config(config, self.id, n);
        }
    }
}

/// Metric ids of one filter configuration.
#[derive(Debug, Default)]
pub struct Stats {
    allowed: Counter,
    waited: Counter,
    denied: [Counter; DenyReason::ALL.len()],
    fetches: Option<usize>,
    fetch_failures: Option<usize>,
    ws_closed: Counter,
    table_version: Option<usize>,
    table_keys: Option<usize>,
    table_age: Option<usize>,
    cost_malformed: Counter,
    cost_clamped: Counter,
    batches_sent: Option<usize>,
    batches_dropped: Option<usize>,
    batches_failed: Option<usize>,
    batches_pending: Option<usize>,
}

impl Stats {
    /// Defines every metric (only while the configuration is being made).
    pub fn define(config: ConfigEnvoy) -> Stats {
        let counter = |name: &str| host::define_metric(config, name, false);
        let gauge = |name: &str| host::define_metric(config, name, true);
        let moved = |name: &str| Counter::define(config, name);
        Stats {
            allowed: moved("keygate_allowed"),
            waited: moved("keygate_waited"),
            denied: DenyReason::ALL.map(|r| moved(&format!("keygate_denied_{}", r.as_str()))),
            fetches: counter("keygate_fetches"),
            fetch_failures: counter("keygate_fetch_failures"),
            ws_closed: moved("keygate_ws_closed"),
            table_version: gauge("keygate_table_version"),
            table_keys: gauge("keygate_table_keys"),
            table_age: gauge("keygate_table_age_seconds"),
            cost_malformed: moved("keygate_usage_cost_malformed"),
            cost_clamped: moved("keygate_usage_cost_clamped"),
            batches_sent: counter("keygate_usage_batches_sent"),
            batches_dropped: counter("keygate_usage_batches_dropped"),
            batches_failed: counter("keygate_usage_batches_failed"),
            batches_pending: gauge("keygate_usage_batches_pending"),
        }
    }

    fn on_config(config: ConfigEnvoy, id: Option<usize>, n: u64) {
        if let Some(id) = id {
            host::count_on_config(config, id, n);
        }
    }

    fn gauge(config: ConfigEnvoy, id: Option<usize>, value: u64) {
        if let Some(id) = id {
            host::set_gauge(config, id, value);
        }
    }

    pub fn allowed(&self) {
        self.allowed.add();
    }

    pub fn waited(&self) {
        self.waited.add();
    }

    pub fn denied(&self, reason: DenyReason) {
        let i = DenyReason::ALL.iter().position(|r| *r == reason);
        if let Some(counter) = i.and_then(|i| self.denied.get(i)) {
            counter.add();
        }
    }

    pub fn ws_closed(&self) {
        self.ws_closed.add();
    }

    /// Adds what requests counted since the last flush to Envoy's counters
    /// (the main thread's tick).
    pub fn flush(&self, config: ConfigEnvoy) {
        let moved = [
            &self.allowed,
            &self.waited,
            &self.ws_closed,
            &self.cost_malformed,
            &self.cost_clamped,
        ];
        for counter in moved.into_iter().chain(&self.denied) {
            counter.flush(config);
        }
    }

    pub fn fetched(&self, config: ConfigEnvoy, ok: bool) {
        let id = if ok {
            self.fetches
        } else {
            self.fetch_failures
        };
        Stats::on_config(config, id, 1);
    }

    pub fn table(&self, config: ConfigEnvoy, version: u64, keys: usize) {
        Stats::gauge(config, self.table_version, version);
        Stats::gauge(config, self.table_keys, keys as u64);
    }

    pub fn age(&self, config: ConfigEnvoy, seconds: u64) {
        Stats::gauge(config, self.table_age, seconds);
    }

    pub fn cost_malformed(&self) {
        self.cost_malformed.add();
    }

    pub fn cost_clamped(&self) {
        self.cost_clamped.add();
    }

    /// What a reporter call did, and its queue's length.
    pub fn usage(&self, config: ConfigEnvoy, report: &Report, pending: usize) {
        let counts = [
            (self.batches_sent, report.sent),
            (self.batches_dropped, report.dropped),
            (self.batches_failed, report.failed),
        ];
        for (id, n) in counts.into_iter().filter(|(_, n)| *n > 0) {
            Stats::on_config(config, id, u64::from(n));
        }
        Stats::gauge(config, self.batches_pending, pending as u64);
    }
}
