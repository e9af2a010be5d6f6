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

use crate::abi::{ConfigEnvoy, FilterEnvoy};
use crate::host;
use keygate::decision::DenyReason;
use keygate::engine::usage::Report;

/// Metric ids of one filter configuration.
#[derive(Debug, Default)]
pub struct Stats {
    allowed: Option<usize>,
    waited: Option<usize>,
    denied: [Option<usize>; DenyReason::ALL.len()],
    fetches: Option<usize>,
    fetch_failures: Option<usize>,
    ws_closed: Option<usize>,
    table_version: Option<usize>,
    table_keys: Option<usize>,
    table_age: Option<usize>,
    cost_malformed: Option<usize>,
    cost_clamped: Option<usize>,
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
        Stats {
            allowed: counter("keygate_allowed"),
            waited: counter("keygate_waited"),
            denied: DenyReason::ALL.map(|r| counter(&format!("keygate_denied_{}", r.as_str()))),
            fetches: counter("keygate_fetches"),
            fetch_failures: counter("keygate_fetch_failures"),
            ws_closed: counter("keygate_ws_closed"),
            table_version: gauge("keygate_table_version"),
            table_keys: gauge("keygate_table_keys"),
            table_age: gauge("keygate_table_age_seconds"),
            cost_malformed: counter("keygate_usage_cost_malformed"),
            cost_clamped: counter("keygate_usage_cost_clamped"),
            batches_sent: counter("keygate_usage_batches_sent"),
            batches_dropped: counter("keygate_usage_batches_dropped"),
            batches_failed: counter("keygate_usage_batches_failed"),
            batches_pending: gauge("keygate_usage_batches_pending"),
        }
    }

    fn on_stream(filter: FilterEnvoy, id: Option<usize>) {
        if let Some(id) = id {
            host::count_on_stream(filter, id, 1);
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

    pub fn allowed(&self, filter: FilterEnvoy) {
        Stats::on_stream(filter, self.allowed);
    }

    pub fn waited(&self, filter: FilterEnvoy) {
        Stats::on_stream(filter, self.waited);
    }

    pub fn denied(&self, filter: FilterEnvoy, reason: DenyReason) {
        let i = DenyReason::ALL.iter().position(|r| *r == reason);
        Stats::on_stream(
            filter,
            i.and_then(|i| self.denied.get(i)).copied().flatten(),
        );
    }

    pub fn ws_closed(&self, filter: FilterEnvoy) {
        Stats::on_stream(filter, self.ws_closed);
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

    pub fn cost_malformed(&self, filter: FilterEnvoy) {
        Stats::on_stream(filter, self.cost_malformed);
    }

    pub fn cost_clamped(&self, filter: FilterEnvoy) {
        Stats::on_stream(filter, self.cost_clamped);
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
