//! Background upkeep, once a second: expired keys leave the key table after
//! their retention, the revision log is compacted and usage past its
//! retention is folded (minutes into hours) or dropped, keys expiring within
//! a week get their `key.expiring` event (crate::events), audit entries and
//! finished webhook deliveries past their retention go, and keys whose cap
//! or quota period ended are refilled (back in the key table as active); and
//! every 100 ms the
//! version is re-read so that writes by another process (the admin CLI: a
//! revocation, a suspension) reach the filters within the revocation bound.

use crate::clock;
use crate::events;
use crate::store::{Store, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::MissedTickBehavior;

/// How often the upkeep runs.
const INTERVAL: Duration = Duration::from_secs(1);
/// How often the version is re-read.
const VERSION_INTERVAL: Duration = Duration::from_millis(100);

/// What the upkeep keeps.
#[derive(Debug, Clone, Copy)]
pub struct Upkeep {
    /// Seconds an expired key stays in the table (answering "expired").
    pub expired_retention: u64,
    /// Revisions kept for deltas; older filters get a snapshot.
    pub revisions_kept: u64,
}

/// Runs the upkeep until the runtime stops.
pub fn spawn(store: Arc<dyn Store>, upkeep: Upkeep) {
    let versions = Arc::clone(&store);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(VERSION_INTERVAL);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = versions.refresh_version().await {
                tracing::debug!(error = %e, "version re-read failed; retrying");
            }
        }
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = run_once(&*store, upkeep).await {
                tracing::warn!(error = %e, "upkeep failed; retrying");
            }
        }
    });
}

async fn run_once(store: &dyn Store, upkeep: Upkeep) -> Result<(), StoreError> {
    let cutoff = clock::now().saturating_sub(upkeep.expired_retention);
    let retired = store.retire_expired(cutoff).await?;
    if retired > 0 {
        tracing::info!(count = retired, "expired keys left the key table");
    }
    let dropped = store.compact(upkeep.revisions_kept).await?;
    if dropped > 0 {
        tracing::debug!(count = dropped, "revision log compacted");
    }
    let refilled = store.refill_caps(clock::now()).await?;
    if refilled > 0 {
        tracing::info!(count = refilled, "exhausted keys refilled");
    }
    let folded = store.compact_usage(clock::now()).await?;
    if folded > 0 {
        tracing::debug!(rows = folded, "usage compacted");
    }
    let expiring = events::scan_expiring(store, clock::now()).await?;
    if expiring > 0 {
        tracing::info!(keys = expiring, "key.expiring events queued");
    }
    store.prune_events(clock::now()).await?;
    Ok(())
}
