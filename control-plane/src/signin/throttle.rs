//! Slows down guessing passwords: failed sign-ins are counted per account
//! (email) and per client address, in memory. After [`FREE_FAILURES`] in a
//! row, each further failure locks that account or address for twice as
//! long as the last (1 s, 2 s, 4 s … up to [`MAX_LOCK`]); while locked, a
//! sign-in is refused without checking the password. A success clears the
//! account's and the address's count.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Failures in a row before the first lock.
pub const FREE_FAILURES: u32 = 3;
/// The longest lock.
pub const MAX_LOCK: Duration = Duration::from_secs(15 * 60);
/// Entries kept before idle ones are dropped.
const MAX_ENTRIES: usize = 100_000;
/// An entry this long without a failure is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    locked_until: Instant,
}

/// Failure counts by account and by address.
#[derive(Debug, Default)]
pub struct SignInThrottle {
    entries: Mutex<HashMap<String, Failures>>,
}

fn account_key(email: &str) -> String {
    format!("account:{}", email.trim().to_lowercase())
}

fn address_key(address: &str) -> String {
    format!("address:{address}")
}

/// The lock after the `count`-th failure in a row.
fn lock_after(count: u32) -> Duration {
    match count.checked_sub(FREE_FAILURES + 1) {
        None => Duration::ZERO,
        Some(extra) => Duration::from_secs(1u64 << extra.min(20)).min(MAX_LOCK),
    }
}

impl SignInThrottle {
    /// `Err(wait)` while `email` or `address` is locked.
    pub fn check(&self, email: &str, address: &str, now: Instant) -> Result<(), Duration> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let wait = [account_key(email), address_key(address)]
            .iter()
            .filter_map(|k| entries.get(k))
            .map(|f| f.locked_until.saturating_duration_since(now))
            .max()
            .unwrap_or_default();
        if wait.is_zero() {
            Ok(())
        } else {
            Err(wait)
        }
    }

    /// Counts a failure of `email` from `address`.
    pub fn failed(&self, email: &str, address: &str, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, f| now.saturating_duration_since(f.last) < FORGET_AFTER);
        }
        for key in [account_key(email), address_key(address)] {
            let f = entries.entry(key).or_insert(Failures {
                count: 0,
                last: now,
                locked_until: now,
            });
            f.count = f.count.saturating_add(1);
            f.last = now;
            f.locked_until = now + lock_after(f.count);
        }
    }

    /// Clears the counts of `email` and `address` after a success.
    pub fn succeeded(&self, email: &str, address: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.remove(&account_key(email));
        entries.remove(&address_key(address));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_grow_after_the_free_failures() {
        let t = SignInThrottle::default();
        let now = Instant::now();
        for _ in 0..FREE_FAILURES {
            assert!(t.check("A@x.test", "1.2.3.4", now).is_ok());
            t.failed("a@x.test", "1.2.3.4", now);
        }
        assert!(t.check("a@x.test", "9.9.9.9", now).is_ok());
        t.failed("a@x.test", "1.2.3.4", now);
        assert_eq!(
            t.check("a@x.test", "9.9.9.9", now),
            Err(Duration::from_secs(1))
        );
        assert_eq!(
            t.check("b@x.test", "1.2.3.4", now),
            Err(Duration::from_secs(1))
        );
        let later = now + Duration::from_secs(1);
        assert!(t.check("a@x.test", "1.2.3.4", later).is_ok());
        t.failed("a@x.test", "1.2.3.4", later);
        assert_eq!(
            t.check("a@x.test", "1.2.3.4", later),
            Err(Duration::from_secs(2))
        );
        assert_eq!(lock_after(100), MAX_LOCK);
        t.succeeded("a@x.test", "1.2.3.4");
        assert!(t.check("a@x.test", "1.2.3.4", later).is_ok());
    }
}
