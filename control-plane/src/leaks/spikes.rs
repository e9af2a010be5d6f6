//! Usage spikes (SPEC §17): every [`SpikeRule::every`] seconds, the keys
//! whose requests (every outcome) in the current hour reach
//! `--spike-min-requests` (default 1,000) and exceed `--spike-factor`
//! (default 10) times their usual hourly volume get a `key.usage.spike`
//! event, at most one per key per hour (the hour is claimed in the store,
//! so replicas sharing a database tell it once).
//!
//! The usual volume is the mean over the 168 hours of the past 7 days
//! before the current hour (hours without requests count as 0, so a key
//! minted yesterday has a low usual volume; the minimum holds the
//! threshold up), read from the usage the control plane keeps (minute rows
//! of the last 48 h and hourly rows before). The scan reads only the
//! current hour's minute rows; the 7-day history is read only for the keys
//! past the minimum.

use crate::clock;
use crate::service::Service;
use crate::store::StoreError;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::MissedTickBehavior;

/// Hours the usual volume is the mean of.
pub const HISTORY_HOURS: u64 = 7 * 24;
const HOUR: u64 = 3600;

/// When a key's hour counts as a spike, and how often to look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpikeRule {
    /// How many times its usual hourly volume.
    pub factor: u64,
    /// The fewest requests in the hour that may be a spike.
    pub min_requests: u64,
    /// Seconds between two scans.
    pub every: u64,
}

impl Default for SpikeRule {
    fn default() -> SpikeRule {
        SpikeRule {
            factor: 10,
            min_requests: 1000,
            every: 60,
        }
    }
}

impl SpikeRule {
    /// Whether `requests` in an hour is a spike beside `history`, the
    /// requests of the [`HISTORY_HOURS`] before it.
    pub fn is_spike(&self, requests: u64, history: u64) -> bool {
        // requests > factor × history / 168, in integers.
        requests >= self.min_requests
            && u128::from(requests) * u128::from(HISTORY_HOURS)
                > u128::from(self.factor) * u128::from(history)
    }
}

/// Scans for spikes every [`SpikeRule::every`] seconds until the runtime
/// stops.
pub fn spawn(service: Arc<Service>) {
    let rule = service.leak_watch().spikes;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(rule.every.max(1)));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match scan(&service, rule, clock::now()).await {
                Ok(0) => {}
                Ok(told) => tracing::info!(keys = told, "key.usage.spike events queued"),
                Err(e) => tracing::warn!(error = %e, "spike scan failed; retrying"),
            }
        }
    });
}

/// Queues `key.usage.spike` for each key spiking in the hour of `now`, and
/// in the hour before while the last scan may not have seen its end;
/// returns how many.
pub async fn scan(service: &Service, rule: SpikeRule, now: u64) -> Result<usize, StoreError> {
    let current = now / HOUR * HOUR;
    let earlier = now.saturating_sub(rule.every.saturating_add(60)) / HOUR * HOUR;
    let mut told = scan_hour(service, rule, current).await?;
    if earlier < current {
        told += scan_hour(service, rule, earlier).await?;
    }
    Ok(told)
}

async fn scan_hour(service: &Service, rule: SpikeRule, hour: u64) -> Result<usize, StoreError> {
    let store = service.store();
    let mut told = 0;
    for busy in store.busy_keys(hour, rule.min_requests).await? {
        let from = hour.saturating_sub(HISTORY_HOURS * HOUR);
        let history = store.requests_between(busy.key_id, from, hour).await?;
        if rule.is_spike(busy.requests, history) && store.claim_spike(busy.key_id, hour).await? {
            service
                .emit_usage_spike(&busy, hour, history / HISTORY_HOURS)
                .await;
            told += 1;
        }
    }
    Ok(told)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spike_is_over_the_minimum_and_the_multiple() {
        let rule = SpikeRule::default();
        assert!(rule.is_spike(1000, 0));
        assert!(!rule.is_spike(999, 0));
        // Usual: 100 an hour (16,800 over the week): a spike is over 1,000.
        assert!(!rule.is_spike(1000, 16_800));
        assert!(rule.is_spike(1001, 16_800));
        assert!(!rule.is_spike(u64::MAX / 100, u64::MAX), "no overflow");
    }
}
