//! A key's own rate limits in process-wide state: the core's counter
//! ([`keygate::limits`]) over one map of every key's counts, shared by every
//! worker (and every configuration, so a reload keeps the counts).
//!
//! Each value carries a version that every write moves, so the core's
//! compare-and-set holds across workers; the mutex is taken only by
//! requests whose key has limits of its own, for one read or one write.

use keygate::ids::KeyId;
use keygate::limits::{CountStore, Counts, LimitError};
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

/// The counts of every key that used its limits, with their version.
static COUNTS: LazyLock<Mutex<HashMap<KeyId, (Counts, u64)>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The process's counts, as the core's [`CountStore`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessCounts;

fn counts() -> MutexGuard<'static, HashMap<KeyId, (Counts, u64)>> {
    // A panic while holding the lock leaves plain data: keep using it.
    COUNTS.lock().unwrap_or_else(PoisonError::into_inner)
}

impl CountStore for ProcessCounts {
    type Version = u64;

    fn read(&mut self, key: KeyId) -> Result<Option<(Counts, u64)>, LimitError> {
        Ok(counts().get(&key).copied())
    }

    fn write(&mut self, key: KeyId, next: Counts, seen: Option<u64>) -> Result<bool, LimitError> {
        let mut map = counts();
        let current = map.get(&key).map(|(_, version)| *version);
        if current != seen {
            return Ok(false);
        }
        map.insert(key, (next, current.map_or(1, |v| v.wrapping_add(1))));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate::limits::{admit, RateLimits, Verdict};

    #[test]
    fn workers_share_one_count() {
        let limits = RateLimits {
            per_minute: 50,
            per_day: 0,
        };
        let key = KeyId(0xfeed);
        let workers: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    (0..40)
                        .filter(|_| {
                            admit(&mut ProcessCounts, key, limits, 1_800_000_000)
                                == Ok(Verdict::Allowed)
                        })
                        .count()
                })
            })
            .collect();
        let allowed: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
        assert_eq!(allowed, 50);
    }
}
