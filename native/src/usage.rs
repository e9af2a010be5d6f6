//! Usage counting over the whole process: one aggregate, taken by the main thread.
//!
//! Workers count into one of [`SHARDS`] small mutexed tallies (chosen by the
//! key id, so two workers rarely meet on one lock, and a lock is held for a
//! map update only); the main thread takes them all on its tick into the
//! configuration's reporter (`keygate::engine::usage`). The stream's side
//! (what a request counts, and when, and the upstream's cost header) is in
//! [`crate::filter`].

use keygate::config::UsageConfig;
use keygate::ids::KeyId;
use keygate::usage::{Outcome, Tally};
use std::sync::{Mutex, MutexGuard};

/// Tallies the workers count into.
pub const SHARDS: usize = 16;

/// The process's counts of one filter configuration, and its settings.
pub struct Usage {
    pub enabled: bool,
    pub cost_header: String,
    shards: [Mutex<Tally>; SHARDS],
}

impl Usage {
    pub fn new(config: &UsageConfig) -> Usage {
        Usage {
            enabled: config.enabled,
            cost_header: config.cost_header.clone(),
            shards: std::array::from_fn(|_| Mutex::new(Tally::default())),
        }
    }

    /// The shard of `key`. A poisoned lock still holds a consistent tally
    /// (every change is one map update).
    fn shard(&self, key: KeyId) -> Option<MutexGuard<'_, Tally>> {
        let i = (key.0 % SHARDS as u64) as usize;
        let shard = self.shards.get(i)?;
        Some(
            shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Counts one request of `key`, with `micros` of cost.
    pub fn count(&self, key: KeyId, now_secs: u64, outcome: Outcome, micros: u64) {
        if !self.enabled {
            return;
        }
        if let Some(mut tally) = self.shard(key) {
            tally.count(key, now_secs, outcome);
            if micros > 0 {
                tally.cost(key, now_secs, micros);
            }
        }
    }

    /// Everything counted so far (the main thread's tick).
    pub fn take(&self) -> Tally {
        let mut all = Tally::default();
        for shard in &self.shards {
            let taken = shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            all.merge(taken);
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_of_every_shard_are_taken_together() {
        let usage = Usage::new(&UsageConfig::default());
        for key in 0..40 {
            usage.count(KeyId(key), 60, Outcome::Allowed, 10);
        }
        let all = usage.take();
        assert_eq!(all.len(), 40);
        assert!(usage.take().is_empty());
        let off = Usage::new(&UsageConfig {
            enabled: false,
            ..UsageConfig::default()
        });
        off.count(KeyId(1), 60, Outcome::Allowed, 0);
        assert!(off.take().is_empty());
    }
}
