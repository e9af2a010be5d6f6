//! The process's one fetch stream, on the main thread: the engine's fetch
//! loop (`keygate::engine::fetch`, the wasm filter's loop too) with a
//! table-direct sink, so a snapshot is built page by page and a delta
//! applied to a copy of the table, no body kept. A new table is published
//! to every worker at once; the waiting requests are woken, and the
//! WebSockets whose key died. Outcomes are logged through the core's
//! [`FetchLog`], so both adapters say the same lines.

use crate::abi::ConfigEnvoy;
use crate::host;
use crate::log;
use crate::shared::Shared;
use keygate::config::FeedConfig;
use keygate::engine::fetch::{Fetcher, Outcome};
use keygate::engine::fetch_log::FetchLog;
use keygate::engine::request::FeedRequest;
use keygate::engine::sink::{TablePaging, TableSink};

/// The fetch loop of one configuration.
pub struct FeedLoop {
    /// The engine's fetch loop, building the table itself (no store).
    fetcher: Fetcher<TablePaging>,
    /// Failure streak and lines of the outcomes.
    log: FetchLog,
    config: FeedConfig,
    /// Names this Envoy's fetch stream to the control plane.
    client: String,
    /// Unix ms of the configuration, until the first table is logged.
    first_table_from: Option<u64>,
}

impl FeedLoop {
    /// The loop of `config`'s feed; `first_table_from` (unix ms) when the
    /// configuration starts without a table.
    pub fn new(config: FeedConfig, client: String, first_table_from: Option<u64>) -> FeedLoop {
        FeedLoop {
            fetcher: Fetcher::new(
                u64::from(config.sync_interval_ms),
                u64::from(config.retry_ms),
            ),
            log: FetchLog::default(),
            config,
            client,
            first_table_from,
        }
    }

    /// Retries a failed fetch at least every `retry_ms` (requests wait).
    pub fn hurry(&mut self, retry_ms: u64) {
        self.fetcher.hurry(retry_ms);
    }

    /// Starts the next feed request if one is due.
    pub fn poll(&mut self, envoy: ConfigEnvoy, shared: &Shared, now: u64) {
        if !self.fetcher.due(now) {
            return;
        }
        let table = shared.table();
        let ask = self
            .fetcher
            .ask_from(table.as_deref().map(|t| (t.version(), t.key_set())));
        // A snapshot page is answered at once, `wait` or not
        // (docs/feed-protocol.md): ask none, so that its call times out soon.
        let wait = if ask.since == 0 {
            0
        } else {
            self.config.wait_seconds
        };
        let request = FeedRequest::new(&self.config, &ask, wait, Some(&self.client));
        match host::callout(envoy, &request) {
            Ok(id) => self.fetcher.started(id, &ask, now),
            Err(code) => {
                log::debug(&format!("feed callout not started (result {code})"));
                let outcome = self.fetcher.start_failed(now);
                self.record(envoy, shared, &outcome);
            }
        }
    }

    /// The answer to callout `id`, if it is this loop's (false otherwise):
    /// `status` `None` when the call failed without an HTTP answer.
    pub fn on_answer(
        &mut self,
        envoy: ConfigEnvoy,
        shared: &Shared,
        id: u64,
        answer: (Option<u16>, &[u8]),
        now: u64,
    ) -> bool {
        if !self.fetcher.finish(id) {
            return false;
        }
        let (status, body) = answer;
        let table = shared.table();
        let mut sink = TableSink::new(table.as_deref());
        let outcome = self.fetcher.on_answer(&mut sink, status, body, now);
        let next = sink.into_table();
        drop(table);
        self.record(envoy, shared, &outcome);
        if let Some(next) = next {
            shared.publish(next, now);
            self.table_changed(envoy, shared, now);
        } else if outcome == Outcome::NotModified {
            shared.contact(now);
        }
        // The next request at once when due (a page, or a long-poll that
        // was answered: the control plane counts our next `since` as the
        // acknowledgement of what we just applied).
        self.poll(envoy, shared, now);
        true
    }

    /// Logs and counts the outcome of a fetch.
    fn record(&mut self, envoy: ConfigEnvoy, shared: &Shared, outcome: &Outcome) {
        shared
            .stats
            .fetched(envoy, !matches!(outcome, Outcome::Failed(_)));
        let version = || shared.table().map_or(0, |t| t.version());
        self.log.record(&log::line, &self.config, outcome, version);
    }

    /// After a new table: gauges, waiting requests decided, and WebSockets
    /// whose key died woken.
    fn table_changed(&mut self, envoy: ConfigEnvoy, shared: &Shared, now: u64) {
        let Some(table) = shared.table() else {
            return;
        };
        shared.stats.table(envoy, table.version(), table.len());
        if let Some(configured) = self.first_table_from.take() {
            log::info(&format!(
                "first key table (version {}, {} keys) loaded {} ms after the configuration, shared by every worker",
                table.version(),
                table.len(),
                now.saturating_sub(configured)
            ));
        }
        shared.wake_waiting(None);
        shared.wake_dead_websockets(&table, now / 1000);
    }
}
