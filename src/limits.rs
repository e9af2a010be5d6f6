//! Per-key rate limits (SPEC §10): a key's own `per_minute` and `per_day`,
//! counted for that key across every worker of one Envoy, on top of Envoy's
//! tier buckets.
//!
//! Each limit is a fixed window that opens with the first request after the
//! previous one closed (60 s, or 86 400 s): within a window a key gets exactly
//! its limit, whatever the number of workers and connections. The counts of
//! one key are one [`Counts`] value (16 bytes) in state every worker sees;
//! [`admit`] reads it, decides, and writes it back with a compare-and-set,
//! retrying when another worker wrote first. Each adapter implements the
//! two operations of [`CountStore`] over its host (proxy-wasm shared data,
//! or the native module's process-wide map); only keys that have limits
//! ever reach it.

use crate::ids::KeyId;

/// Seconds in the per-minute window.
pub const MINUTE: u64 = 60;
/// Seconds in the per-day window.
pub const DAY: u64 = 86_400;
/// Compare-and-set attempts before [`admit`] gives up ([`LimitError::Contended`]).
pub const MAX_ATTEMPTS: usize = 16;

/// A key's own limits; 0 = no such limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RateLimits {
    pub per_minute: u32,
    pub per_day: u32,
}

impl RateLimits {
    /// No limit of its own (the tier's buckets only).
    pub const NONE: RateLimits = RateLimits {
        per_minute: 0,
        per_day: 0,
    };

    /// True when the key has neither limit.
    pub fn is_none(&self) -> bool {
        *self == RateLimits::NONE
    }
}

/// One key's requests in its current windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Unix seconds the minute window opened.
    pub minute_start: u32,
    /// Requests allowed in it.
    pub in_minute: u32,
    /// Unix seconds the day window opened.
    pub day_start: u32,
    /// Requests allowed in it.
    pub in_day: u32,
}

impl Counts {
    /// Size of the encoded value.
    pub const BYTES: usize = 16;

    /// The four fields, little-endian.
    pub fn to_bytes(self) -> [u8; Counts::BYTES] {
        let mut out = [0u8; Counts::BYTES];
        let fields = [
            self.minute_start,
            self.in_minute,
            self.day_start,
            self.in_day,
        ];
        for (chunk, field) in out.chunks_exact_mut(4).zip(fields) {
            chunk.copy_from_slice(&field.to_le_bytes());
        }
        out
    }

    /// Back from [`Counts::to_bytes`]; `None` for any other length.
    pub fn from_bytes(bytes: &[u8]) -> Option<Counts> {
        let bytes: &[u8; Counts::BYTES] = bytes.try_into().ok()?;
        let mut fields = bytes
            .chunks_exact(4)
            .map(|c| c.try_into().map(u32::from_le_bytes).unwrap_or(0));
        Some(Counts {
            minute_start: fields.next()?,
            in_minute: fields.next()?,
            day_start: fields.next()?,
            in_day: fields.next()?,
        })
    }
}

/// Where a key stands against one of its limits: the `x-ratelimit-*` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the window closes (at least 1).
    pub reset: u64,
}

/// What [`admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Counted: the request goes on.
    Allowed,
    /// A limit is used up: 429 with this standing (the limit whose window
    /// closes last among those used up: the request may succeed after it).
    Limited(Standing),
}

/// Why the counts could not be updated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitError {
    /// The host refused a read or a write.
    SharedData,
    /// Other workers kept writing first for [`MAX_ATTEMPTS`] tries.
    Contended,
}

/// The counts of every key with limits, shared by the workers of one Envoy.
pub trait CountStore {
    /// What a read returns to make the following write conditional on it.
    type Version: Copy;

    /// The key's counts and their version; `None` when it has none yet.
    fn read(&mut self, key: KeyId) -> Result<Option<(Counts, Self::Version)>, LimitError>;

    /// Stores `counts` if the key's counts are still at `seen` (`None`: it
    /// had none); `Ok(false)` when another worker wrote first.
    fn write(
        &mut self,
        key: KeyId,
        counts: Counts,
        seen: Option<Self::Version>,
    ) -> Result<bool, LimitError>;
}

/// Counts one request of `key` against `limits` at `now` (unix seconds).
pub fn admit<S: CountStore>(
    store: &mut S,
    key: KeyId,
    limits: RateLimits,
    now: u64,
) -> Result<Verdict, LimitError> {
    for _ in 0..MAX_ATTEMPTS {
        let read = store.read(key)?;
        let (counts, seen) = match read {
            Some((counts, version)) => (counts, Some(version)),
            None => (Counts::default(), None),
        };
        match step(counts, limits, now) {
            Err(standing) => return Ok(Verdict::Limited(standing)),
            Ok(next) => {
                if store.write(key, next, seen)? {
                    return Ok(Verdict::Allowed);
                }
            }
        }
    }
    Err(LimitError::Contended)
}

/// One window: its limit, start and count in `counts`, and its length.
struct Window {
    limit: u32,
    start: u32,
    used: u32,
    length: u64,
}

impl Window {
    /// The window at `now`: a new one, empty, once the old one closed.
    fn at(limit: u32, start: u32, used: u32, length: u64, now: u64) -> Window {
        let open = limit > 0 && now < u64::from(start).saturating_add(length);
        Window {
            limit,
            start: if open { start } else { clamp(now) },
            used: if open { used } else { 0 },
            length,
        }
    }

    fn is_used_up(&self) -> bool {
        self.limit > 0 && self.used >= self.limit
    }

    /// The window's standing at `now`. Workers read the clock apart, so a
    /// window another worker opened may start a second after `now`: the
    /// reset never exceeds the window's length.
    fn standing(&self, now: u64) -> Standing {
        let end = u64::from(self.start).saturating_add(self.length);
        Standing {
            limit: self.limit,
            remaining: self.limit.saturating_sub(self.used),
            reset: end.saturating_sub(now).clamp(1, self.length),
        }
    }
}

fn clamp(now: u64) -> u32 {
    u32::try_from(now).unwrap_or(u32::MAX)
}

/// The counts after one more request, or the standing that refuses it.
fn step(counts: Counts, limits: RateLimits, now: u64) -> Result<Counts, Standing> {
    let minute = Window::at(
        limits.per_minute,
        counts.minute_start,
        counts.in_minute,
        MINUTE,
        now,
    );
    let day = Window::at(limits.per_day, counts.day_start, counts.in_day, DAY, now);
    let refusing = [&day, &minute].into_iter().find(|w| w.is_used_up());
    if let Some(window) = refusing {
        return Err(window.standing(now));
    }
    Ok(Counts {
        minute_start: minute.start,
        in_minute: minute.used.saturating_add(1),
        day_start: day.start,
        in_day: day.used.saturating_add(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// An in-memory store whose writes lose the race `lose` times first.
    #[derive(Default)]
    struct Memory {
        values: HashMap<KeyId, (Counts, u32)>,
        lose: usize,
        writes: usize,
    }

    impl CountStore for Memory {
        type Version = u32;

        fn read(&mut self, key: KeyId) -> Result<Option<(Counts, u32)>, LimitError> {
            Ok(self.values.get(&key).copied())
        }

        fn write(
            &mut self,
            key: KeyId,
            counts: Counts,
            seen: Option<u32>,
        ) -> Result<bool, LimitError> {
            self.writes += 1;
            if self.lose > 0 {
                self.lose -= 1;
                // Another worker counted a request meanwhile.
                let (mut theirs, version) = self.values.get(&key).copied().unwrap_or_default();
                theirs.in_minute += 1;
                theirs.in_day += 1;
                theirs.minute_start = counts.minute_start;
                theirs.day_start = counts.day_start;
                self.values.insert(key, (theirs, version + 1));
                return Ok(false);
            }
            let current = self.values.get(&key).map(|(_, v)| *v);
            if current != seen {
                return Ok(false);
            }
            self.values
                .insert(key, (counts, current.map_or(1, |v| v + 1)));
            Ok(true)
        }
    }

    const K: KeyId = KeyId(7);
    const T0: u64 = 1_800_000_000;

    fn limits(per_minute: u32, per_day: u32) -> RateLimits {
        RateLimits {
            per_minute,
            per_day,
        }
    }

    fn allowed(store: &mut Memory, limits: RateLimits, now: u64, n: usize) -> usize {
        (0..n)
            .filter(|_| admit(store, K, limits, now) == Ok(Verdict::Allowed))
            .count()
    }

    #[test]
    fn a_window_opened_by_a_clock_ahead_resets_within_its_length() {
        let mut store = Memory::default();
        assert_eq!(allowed(&mut store, limits(1, 0), T0 + 1, 1), 1);
        let Ok(Verdict::Limited(standing)) = admit(&mut store, K, limits(1, 0), T0) else {
            panic!("limited")
        };
        assert_eq!(standing.reset, 60);
    }

    #[test]
    fn a_minute_allows_exactly_its_limit_then_reopens() {
        let mut store = Memory::default();
        assert_eq!(allowed(&mut store, limits(5, 0), T0, 15), 5);
        assert_eq!(
            admit(&mut store, K, limits(5, 0), T0 + 20),
            Ok(Verdict::Limited(Standing {
                limit: 5,
                remaining: 0,
                reset: 40
            }))
        );
        assert_eq!(allowed(&mut store, limits(5, 0), T0 + 59, 1), 0);
        assert_eq!(allowed(&mut store, limits(5, 0), T0 + 60, 9), 5);
    }

    #[test]
    fn the_day_limit_holds_across_minutes_and_names_its_reset() {
        let mut store = Memory::default();
        let l = limits(3, 5);
        assert_eq!(allowed(&mut store, l, T0, 10), 3);
        assert_eq!(allowed(&mut store, l, T0 + 61, 10), 2);
        let Ok(Verdict::Limited(s)) = admit(&mut store, K, l, T0 + 200) else {
            panic!("not limited")
        };
        assert_eq!((s.limit, s.remaining, s.reset), (5, 0, DAY - 200));
        assert_eq!(allowed(&mut store, l, T0 + DAY, 10), 3);
    }

    #[test]
    fn a_lost_race_is_retried_and_counts_the_other_worker() {
        let mut store = Memory {
            lose: 3,
            ..Memory::default()
        };
        assert_eq!(admit(&mut store, K, limits(5, 0), T0), Ok(Verdict::Allowed));
        // Three requests of other workers, then ours: four in the window.
        assert_eq!(store.values[&K].0.in_minute, 4);
        assert_eq!(allowed(&mut store, limits(5, 0), T0, 5), 1);
        let mut stuck = Memory {
            lose: usize::MAX,
            ..Memory::default()
        };
        assert_eq!(
            admit(&mut stuck, K, limits(1_000_000, 0), T0),
            Err(LimitError::Contended)
        );
        assert_eq!(stuck.writes, MAX_ATTEMPTS);
    }

    #[test]
    fn counts_round_trip_and_refuse_other_lengths() {
        let c = Counts {
            minute_start: 1,
            in_minute: 2,
            day_start: u32::MAX,
            in_day: 4,
        };
        assert_eq!(Counts::from_bytes(&c.to_bytes()), Some(c));
        assert_eq!(Counts::from_bytes(&[0; 15]), None);
        assert!(RateLimits::NONE.is_none() && !limits(0, 1).is_none());
    }
}
