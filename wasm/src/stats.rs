//! Proxy-wasm metrics; Envoy shows them in `/stats` as `wasmcustom.<name>`.
//!
//! Counters: `keygate_allowed`, `keygate_denied_<reason>` (one per
//! [`DenyReason`]), `keygate_fetches` (answers 200/304 from the control
//! plane, to the leader's feed or to a VM's own first fetch),
//! `keygate_fetch_failures`, `keygate_ws_closed`, `keygate_waited`
//! (requests that waited for a VM's first table). Gauges:
//! `keygate_table_version`, `keygate_table_keys`, `keygate_table_age_seconds`
//! (since the last successful contact with the control plane). Usage:
//! counters `keygate_usage_batches_sent` (acknowledged),
//! `keygate_usage_batches_dropped` (never acknowledged: queue full, too
//! old, or refused), `keygate_usage_batches_failed` (sends to be retried),
//! `keygate_usage_cost_malformed` (a cost header ignored),
//! `keygate_usage_cost_clamped` (negative or huge); gauge
//! `keygate_usage_batches_pending` (the reporter's queue). A metric
//! defined under one name has one value for the whole Envoy process: counters
//! add up over the VMs (one per worker), gauges hold the last value recorded.
//! Per-request counters are kept in the VM and added to the host's on every
//! tick ([`Stats::flush`]), so a request makes no metric host call.

use crate::host;
use keygate::decision::DenyReason;
use keygate::engine::usage::Report;
use proxy_wasm::types::MetricType;
use std::cell::Cell;

/// A host counter and what this VM counted since the last flush.
#[derive(Debug, Default)]
struct Counter {
    id: Option<u32>,
    pending: Cell<u64>,
}

impl Counter {
    fn new(name: &str) -> Counter {
        Counter {
            id: define(MetricType::Counter, name),
            pending: Cell::new(0),
        }
    }

    fn count(&self) {
        self.pending.set(self.pending.get().saturating_add(1));
    }

    fn flush(&self) {
        let n = self.pending.replace(0);
        if n > 0 {
            add(self.id, n);
        }
    }
}

/// Metric ids of this VM (`None` when the host refused to define one).
#[derive(Debug, Default)]
pub struct Stats {
    allowed: Counter,
    waited: Counter,
    denied: [Counter; DenyReason::ALL.len()],
    cost_malformed: Counter,
    cost_clamped: Counter,
    batches_sent: Option<u32>,
    batches_dropped: Option<u32>,
    batches_failed: Option<u32>,
    batches_pending: Option<u32>,
    fetches: Option<u32>,
    fetch_failures: Option<u32>,
    ws_closed: Option<u32>,
    table_version: Option<u32>,
    table_keys: Option<u32>,
    table_age: Option<u32>,
}

fn define(metric: MetricType, name: &str) -> Option<u32> {
    host::define_metric(metric, name).ok()
}

fn add(id: Option<u32>, n: u64) {
    if let Some(id) = id {
        // A failed metric call is not worth failing a request for.
        let _ = host::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX));
    }
}

fn set(id: Option<u32>, value: u64) {
    if let Some(id) = id {
        let _ = host::record_metric(id, value);
    }
}

impl Stats {
    /// Defines every metric (the same name gives the same metric in every VM).
    pub fn define() -> Stats {
        let counter = |name: &str| define(MetricType::Counter, name);
        let gauge = |name: &str| define(MetricType::Gauge, name);
        Stats {
            allowed: Counter::new("keygate_allowed"),
            waited: Counter::new("keygate_waited"),
            denied: DenyReason::ALL
                .map(|r| Counter::new(&format!("keygate_denied_{}", r.as_str()))),
            cost_malformed: Counter::new("keygate_usage_cost_malformed"),
            cost_clamped: Counter::new("keygate_usage_cost_clamped"),
            batches_sent: counter("keygate_usage_batches_sent"),
            batches_dropped: counter("keygate_usage_batches_dropped"),
            batches_failed: counter("keygate_usage_batches_failed"),
            batches_pending: gauge("keygate_usage_batches_pending"),
            fetches: counter("keygate_fetches"),
            fetch_failures: counter("keygate_fetch_failures"),
            ws_closed: counter("keygate_ws_closed"),
            table_version: gauge("keygate_table_version"),
            table_keys: gauge("keygate_table_keys"),
            table_age: gauge("keygate_table_age_seconds"),
        }
    }

    pub fn allowed(&self) {
        self.allowed.count();
    }

    pub fn waited(&self) {
        self.waited.count();
    }

    pub fn denied(&self, reason: DenyReason) {
        let i = DenyReason::ALL.iter().position(|r| *r == reason);
        if let Some(counter) = i.and_then(|i| self.denied.get(i)) {
            counter.count();
        }
    }

    /// Adds what requests counted since the last flush to the host's counters.
    pub fn flush(&self) {
        self.allowed.flush();
        self.waited.flush();
        self.denied.iter().for_each(Counter::flush);
        self.cost_malformed.flush();
        self.cost_clamped.flush();
    }

    pub fn cost_malformed(&self) {
        self.cost_malformed.count();
    }

    pub fn cost_clamped(&self) {
        self.cost_clamped.count();
    }

    /// What a reporter call did, and its queue's length.
    pub fn usage(&self, report: &Report, pending: usize) {
        let counts = [
            (self.batches_sent, report.sent),
            (self.batches_dropped, report.dropped),
            (self.batches_failed, report.failed),
        ];
        for (id, n) in counts.into_iter().filter(|(_, n)| *n > 0) {
            add(id, u64::from(n));
        }
        set(self.batches_pending, pending as u64);
    }

    pub fn fetched(&self) {
        add(self.fetches, 1);
    }

    pub fn fetch_failed(&self) {
        add(self.fetch_failures, 1);
    }

    pub fn ws_closed(&self, n: usize) {
        add(self.ws_closed, n as u64);
    }

    pub fn table(&self, version: u64, keys: usize) {
        set(self.table_version, version);
        set(self.table_keys, keys as u64);
    }

    pub fn age(&self, seconds: u64) {
        set(self.table_age, seconds);
    }
}
