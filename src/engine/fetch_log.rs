//! The log lines of a fetch loop's outcomes, the same for every adapter.
//!
//! A streak of failures is logged at its start and then every
//! [`FAILURES_LOGGED_EVERY`] failures, the recovery once; a usable answer
//! gets its own line ([`FetchLog::record`]). The wasm filter's
//! [`crate::engine::Engine`] and the native module's main thread both log
//! through it, so both adapters say the same lines.

use crate::config::FeedConfig;
use crate::engine::fetch::Outcome;
use crate::engine::host::Level;
use std::fmt;

/// A streak of fetch failures is logged at its start and then this often.
pub const FAILURES_LOGGED_EVERY: u32 = 60;

/// Where the lines go: formatted only if `level` is logged.
pub type Log<'a> = &'a dyn Fn(Level, fmt::Arguments<'_>);

/// The failure streak of one fetch loop.
#[derive(Debug, Default)]
pub struct FetchLog {
    /// Fetch failures in a row.
    failures: u32,
}

impl FetchLog {
    /// Logs the outcome of a fetch of `config`'s feed; `version` is the
    /// version kept when it failed.
    pub fn record(
        &mut self,
        log: Log<'_>,
        config: &FeedConfig,
        outcome: &Outcome,
        version: impl FnOnce() -> u64,
    ) {
        if let Outcome::Failed(failure) = outcome {
            self.failures = self.failures.saturating_add(1);
            if self.failures == 1 || self.failures.is_multiple_of(FAILURES_LOGGED_EVERY) {
                log(Level::Warn, format_args!(
                    "key table fetch from cluster {} failed: {failure}; keeping version {}, retrying every {} ms ({} failures in a row)",
                    config.cluster,
                    version(),
                    config.retry_ms,
                    self.failures
                ));
            }
            return;
        }
        if self.failures > 0 {
            log(
                Level::Info,
                format_args!(
                    "key table fetch from cluster {} works again after {} failures",
                    config.cluster, self.failures
                ),
            );
            self.failures = 0;
        }
        log_outcome(log, outcome);
    }
}

/// The line of a usable answer, if it deserves one.
fn log_outcome(log: Log<'_>, outcome: &Outcome) {
    match outcome {
        Outcome::Page { pages, keys } => log(
            Level::Debug,
            format_args!("key table snapshot: page {pages} received ({keys} keys so far)"),
        ),
        Outcome::Snapshot { version, keys } => log(
            Level::Info,
            format_args!("key table version {version} fetched ({keys} keys, snapshot)"),
        ),
        Outcome::Delta { version, ops } => log(
            Level::Info,
            format_args!("key table version {version} fetched (delta of {ops} changes)"),
        ),
        Outcome::Resync { base, have } => log(
            Level::Warn,
            format_args!(
                "delta from version {base} does not apply to version {}; asking for a snapshot",
                have.unwrap_or(0)
            ),
        ),
        Outcome::NewKeySet { key_set } => log(
            Level::Warn,
            format_args!(
                "snapshot page of another key set ({key_set}) than the pages before it; starting the snapshot over"
            ),
        ),
        Outcome::NotModified | Outcome::Failed(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FilterConfig;
    use crate::engine::fetch::Failure;
    use std::cell::RefCell;

    #[test]
    fn a_failure_streak_is_logged_at_its_start_every_sixtieth_and_at_its_end() {
        let lines = RefCell::new(Vec::new());
        let log = |level: Level, message: fmt::Arguments<'_>| {
            lines.borrow_mut().push((level, message.to_string()));
        };
        let json = br#"{"feed":{"cluster":"cp"}}"#;
        let config = FilterConfig::from_json_with_env(json, |_| Some("tok".into()))
            .unwrap()
            .feed;
        let mut fetch_log = FetchLog::default();
        for _ in 0..FAILURES_LOGGED_EVERY {
            let failed = Outcome::Failed(Failure::NoResponse);
            fetch_log.record(&log, &config, &failed, || 7);
        }
        fetch_log.record(&log, &config, &Outcome::NotModified, || 7);
        let lines = lines.into_inner();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines
            .iter()
            .take(2)
            .all(|(l, m)| *l == Level::Warn && m.contains("keeping version 7")));
        assert!(lines
            .get(2)
            .is_some_and(|(_, m)| m.contains("works again after 60 failures")));
    }
}
