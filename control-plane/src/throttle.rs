//! The management-API rate of SPEC §10: one token bucket per tenant, filled
//! at its plan's `management.rate` per second up to `management.burst`, in
//! this replica's memory (each replica limits on its own).

use crate::plans::ManagementRate;
use keygate::ids::OrgId;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// Buckets kept before full ones (which a new bucket equals) are dropped.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// The tokens at `now` under `rate` (never above the burst).
    fn refilled(self, rate: ManagementRate, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * f64::from(rate.rate)).min(f64::from(rate.burst))
    }
}

/// Every tenant's bucket.
#[derive(Debug, Default)]
pub struct Throttle {
    buckets: Mutex<HashMap<OrgId, Bucket>>,
}

impl Throttle {
    /// Takes one call of `org` at `now` under `rate`; refused, the whole
    /// seconds until the next token (at least 1).
    pub fn take(&self, org: OrgId, rate: ManagementRate, now: Instant) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= MAX_TRACKED {
            buckets.retain(|_, b| b.refilled(rate, now) < f64::from(rate.burst));
        }
        let full = Bucket {
            tokens: f64::from(rate.burst),
            at: now,
        };
        let bucket = buckets.entry(org).or_insert(full);
        let tokens = bucket.refilled(rate, now);
        if tokens >= 1.0 {
            *bucket = Bucket {
                tokens: tokens - 1.0,
                at: now,
            };
            return Ok(());
        }
        let wait = (1.0 - tokens) / f64::from(rate.rate.max(1));
        Err((wait.ceil() as u64).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate() {
        let throttle = Throttle::default();
        let rate = ManagementRate {
            rate: 20,
            burst: 200,
        };
        let (a, b) = (OrgId(1), OrgId(2));
        let start = Instant::now();
        for _ in 0..200 {
            assert_eq!(throttle.take(a, rate, start), Ok(()));
        }
        assert_eq!(throttle.take(a, rate, start), Err(1));
        assert_eq!(
            throttle.take(b, rate, start),
            Ok(()),
            "one bucket per tenant"
        );
        let later = start + Duration::from_millis(500);
        for _ in 0..10 {
            assert_eq!(throttle.take(a, rate, later), Ok(()));
        }
        assert!(throttle.take(a, rate, later).is_err());
        let much_later = start + Duration::from_secs(3600);
        for _ in 0..200 {
            assert_eq!(throttle.take(a, rate, much_later), Ok(()));
        }
        assert!(
            throttle.take(a, rate, much_later).is_err(),
            "never above the burst"
        );
    }
}
