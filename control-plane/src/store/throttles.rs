//! Throttles kept in the database, so every replica counts the same
//! attempts (SPEC §15): one row per (scope, key) with a count and a time,
//! taken atomically by [`Throttles::take`] (the rule is applied inside the
//! write transaction, so parallel attempts are counted one by one) and
//! dropped by [`Throttles::clear`]. Both backends implement [`Throttles`];
//! every [`super::Store`] is one.

use super::StoreFuture;

/// How long a row outlives its time before it is dropped (ms).
pub const FORGET_AFTER_MS: u64 = 3_600_000;

/// The state of one throttled thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub count: u32,
    /// Unix ms: the end of the lock ([`Rule::Lockout`]) or of the window
    /// ([`Rule::Window`]).
    pub until: u64,
}

/// How attempts are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Every attempt counts (a success clears them); after `free` in a row,
    /// each further one locks for twice as long as the last (1 s, 2 s, 4 s
    /// … up to `max_lock_ms`). Locked, an attempt is refused uncounted.
    Lockout { free: u32, max_lock_ms: u64 },
    /// At most `limit` attempts in `window_ms` from the first of them.
    Window { limit: u32, window_ms: u64 },
}

impl Rule {
    /// One attempt at `now` (unix ms) on `entry`: the entry to store (none:
    /// unchanged), and the ms to wait if the attempt is refused.
    pub fn take(self, entry: Option<Entry>, now: u64) -> (Option<Entry>, Result<(), u64>) {
        match self {
            Rule::Lockout { free, max_lock_ms } => {
                let count = match entry {
                    Some(e) if e.until > now => return (None, Err(e.until - now)),
                    Some(e) if now - e.until < FORGET_AFTER_MS => e.count,
                    _ => 0,
                };
                let count = count.saturating_add(1);
                let lock = match count.checked_sub(free.saturating_add(1)) {
                    None => 0,
                    Some(extra) => (1000u64 << extra.min(30)).min(max_lock_ms),
                };
                let until = now.saturating_add(lock);
                (Some(Entry { count, until }), Ok(()))
            }
            Rule::Window { limit, window_ms } => match entry {
                Some(e) if e.until > now && e.count >= limit => (None, Err(e.until - now)),
                Some(e) if e.until > now => (
                    Some(Entry {
                        count: e.count + 1,
                        until: e.until,
                    }),
                    Ok(()),
                ),
                _ if limit == 0 => (None, Err(window_ms)),
                _ => (
                    Some(Entry {
                        count: 1,
                        until: now.saturating_add(window_ms),
                    }),
                    Ok(()),
                ),
            },
        }
    }
}

/// Throttle rows.
pub trait Throttles {
    /// Counts one attempt on `key` of `scope` at `now` (unix ms) under
    /// `rule`, atomically; refused, the ms to wait (the attempt is then
    /// not counted). Drops rows idle for [`FORGET_AFTER_MS`].
    fn take(
        &self,
        scope: &'static str,
        key: String,
        rule: Rule,
        now: u64,
    ) -> StoreFuture<'_, Result<(), u64>>;

    /// Forgets `keys` of `scope` (after a success).
    fn clear(&self, scope: &'static str, keys: Vec<String>) -> StoreFuture<'_, ()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCKOUT: Rule = Rule::Lockout {
        free: 3,
        max_lock_ms: 900_000,
    };

    fn run(rule: Rule, entry: &mut Option<Entry>, now: u64) -> Result<(), u64> {
        let (next, outcome) = rule.take(*entry, now);
        if next.is_some() {
            *entry = next;
        }
        outcome
    }

    #[test]
    fn lockout_after_the_free_failures_doubles() {
        let mut e = None;
        for _ in 0..4 {
            assert_eq!(run(LOCKOUT, &mut e, 10_000), Ok(()));
        }
        assert_eq!(run(LOCKOUT, &mut e, 10_000), Err(1000));
        assert_eq!(run(LOCKOUT, &mut e, 11_000), Ok(()));
        assert_eq!(run(LOCKOUT, &mut e, 11_000), Err(2000));
        assert_eq!(e.map(|e| e.count), Some(5));
        let (_, late) = LOCKOUT.take(e, 11_000 + 2000 + FORGET_AFTER_MS);
        assert_eq!(late, Ok(()));
        let (next, _) = LOCKOUT.take(
            Some(Entry {
                count: 60,
                until: 0,
            }),
            1,
        );
        assert_eq!(next.map(|e| e.until), Some(900_001));
    }

    #[test]
    fn a_window_holds_its_limit() {
        let rule = Rule::Window {
            limit: 2,
            window_ms: 1000,
        };
        let mut e = None;
        assert_eq!(run(rule, &mut e, 0), Ok(()));
        assert_eq!(run(rule, &mut e, 500), Ok(()));
        assert_eq!(run(rule, &mut e, 600), Err(400));
        assert_eq!(run(rule, &mut e, 1000), Ok(()));
        let none = Rule::Window {
            limit: 0,
            window_ms: 1000,
        };
        assert_eq!(none.take(None, 0).1, Err(1000));
    }
}
