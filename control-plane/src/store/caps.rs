//! A key's spending cap and request quota (SPEC §11): each a budget with
//! a limit, a period (lifetime, UTC day or UTC month) and what was used in
//! the current one; how ingested usage fills them, when the key is
//! exhausted, and the 80 % / 100 % threshold crossings, each once a period.
//!
//! Both backends keep a key's [`Caps`] as one JSON text column (`caps`)
//! and its exhaustion as the key table status code (`exhausted`), and both
//! run the same logic here inside their write transactions.

use super::usage::{UsageBatch, UsageCount, ALLOWED};
use keygate::feed::KeyStatus;
use keygate::ids::{KeyId, OrgId};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use time::{Date, OffsetDateTime, Time};

/// The percentages of a limit whose crossing is announced, in order.
pub const THRESHOLDS: [u8; 2] = [80, 100];

/// How long a budget's count runs before it starts again from zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// Never refilled.
    Lifetime,
    /// A UTC calendar day.
    Day,
    /// A UTC calendar month.
    Month,
}

impl Period {
    /// The start (unix seconds) of the period holding `at`.
    pub fn start(self, at: u64) -> u64 {
        match self {
            Period::Lifetime => 0,
            Period::Day => at / 86_400 * 86_400,
            Period::Month => month_start(at),
        }
    }

    /// The start of the period after the one starting at `start`; `None`
    /// for a lifetime.
    pub fn next(self, start: u64) -> Option<u64> {
        match self {
            Period::Lifetime => None,
            Period::Day => Some(start.saturating_add(86_400)),
            Period::Month => Some(month_start(start.saturating_add(32 * 86_400))),
        }
    }
}

/// Unix seconds of 00:00 UTC on the first of the month holding `at`.
fn month_start(at: u64) -> u64 {
    let at = OffsetDateTime::from_unix_timestamp(i64::try_from(at).unwrap_or(i64::MAX))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    Date::from_calendar_date(at.year(), at.month(), 1)
        .map(|first| first.with_time(Time::MIDNIGHT).assume_utc())
        .map_or(0, |first| {
            u64::try_from(first.unix_timestamp()).unwrap_or(0)
        })
}

/// Which budget a crossing or an exhaustion is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CapKind {
    /// The request quota (allowed requests).
    Quota,
    /// The spending cap (cost in micro-units).
    Spend,
}

/// One limit with its period and what was used in the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    pub limit: u64,
    pub period: Period,
    /// Used since `period_start`.
    pub used: u64,
    /// Start of the period `used` counts (unix seconds; 0 for a lifetime).
    pub period_start: u64,
    /// The highest threshold announced in this period (0: none).
    pub announced: u8,
}

impl Budget {
    /// A fresh budget at `now`.
    pub fn new(limit: u64, period: Period, now: u64) -> Budget {
        Budget {
            limit,
            period,
            used: 0,
            period_start: period.start(now),
            announced: 0,
        }
    }

    /// This budget with a new limit and period at `now`: the same period
    /// keeps what was used (a raise gives back what is left); another one
    /// starts a fresh count. Thresholds already reached under the new
    /// limit count as announced.
    pub fn changed(self, limit: u64, period: Period, now: u64) -> Budget {
        let mut next = if period == self.period {
            Budget { limit, ..self }
        } else {
            Budget::new(limit, period, now)
        };
        next.refill(now);
        next.announced = next.reached();
        next
    }

    /// Starts a new count if `at` lies in a later period; true if it did.
    pub fn refill(&mut self, at: u64) -> bool {
        let start = self.period.start(at);
        if start <= self.period_start {
            return false;
        }
        *self = Budget::new(self.limit, self.period, at);
        true
    }

    /// Zero used in the current period (`POST …/usage/reset`).
    pub fn reset(&mut self, now: u64) {
        *self = Budget::new(self.limit, self.period, now);
    }

    /// The highest threshold `used` has reached (0: none).
    fn reached(&self) -> u8 {
        THRESHOLDS
            .into_iter()
            .rev()
            .find(|p| self.used.saturating_mul(100) >= self.limit.saturating_mul(u64::from(*p)))
            .unwrap_or(0)
    }

    /// Adds `amount` used in the minute at `minute` (a minute of an
    /// earlier period counts nothing); returns the thresholds newly
    /// crossed, in order.
    pub fn add(&mut self, minute: u64, amount: u64) -> Vec<u8> {
        self.refill(minute);
        if amount == 0 || self.period.start(minute) < self.period_start {
            return Vec::new();
        }
        self.used = self.used.saturating_add(amount);
        let reached = self.reached();
        let crossed = THRESHOLDS
            .into_iter()
            .filter(|p| *p > self.announced && *p <= reached)
            .collect();
        self.announced = self.announced.max(reached);
        crossed
    }

    pub fn exhausted(&self) -> bool {
        self.used >= self.limit
    }

    /// When the count starts again (unix seconds); `None` for a lifetime.
    pub fn resets_at(&self) -> Option<u64> {
        self.period.next(self.period_start)
    }

    /// What is used at `now`: 0 once the period is over.
    pub fn used_at(&self, now: u64) -> u64 {
        if self.period.start(now) > self.period_start {
            0
        } else {
            self.used
        }
    }
}

/// A key's caps: either, both or none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caps {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Budget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spend: Option<Budget>,
}

/// A threshold crossed by ingested usage: handed to the alert hook
/// (crate::thresholds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Crossing {
    pub org: OrgId,
    pub key_id: KeyId,
    pub kind: CapKind,
    /// 80 or 100.
    pub percent: u8,
    pub used: u64,
    pub limit: u64,
    /// Start of the period it was crossed in (unix seconds; 0: lifetime).
    pub period_start: u64,
}

impl Caps {
    pub fn is_none(&self) -> bool {
        self.quota.is_none() && self.spend.is_none()
    }

    /// The key table status the caps give (`None`: not exhausted); the
    /// quota is named first when both are used up.
    pub fn status(&self) -> Option<KeyStatus> {
        if self.quota.is_some_and(|b| b.exhausted()) {
            Some(KeyStatus::QuotaExhausted)
        } else if self.spend.is_some_and(|b| b.exhausted()) {
            Some(KeyStatus::SpendExhausted)
        } else {
            None
        }
    }

    /// Starts new counts whose period is over at `now`; true if any did.
    pub fn refill(&mut self, now: u64) -> bool {
        let quota = self.quota.as_mut().is_some_and(|b| b.refill(now));
        let spend = self.spend.as_mut().is_some_and(|b| b.refill(now));
        quota || spend
    }

    /// Adds the allowed requests and cost of `rows` (one key's, any order)
    /// and returns the crossings, for `org`'s key `key_id`.
    pub fn add<'a>(
        &mut self,
        org: OrgId,
        key_id: KeyId,
        rows: impl IntoIterator<Item = &'a UsageCount>,
    ) -> Vec<Crossing> {
        let mut rows: Vec<&UsageCount> =
            rows.into_iter().filter(|r| r.outcome == ALLOWED).collect();
        rows.sort_unstable_by_key(|r| r.minute);
        let mut crossings = Vec::new();
        for row in rows {
            for (kind, budget, amount) in [
                (CapKind::Quota, self.quota.as_mut(), row.count),
                (CapKind::Spend, self.spend.as_mut(), row.cost_micros),
            ] {
                let Some(budget) = budget else { continue };
                for percent in budget.add(row.minute, amount) {
                    crossings.push(Crossing {
                        org,
                        key_id,
                        kind,
                        percent,
                        used: budget.used,
                        limit: budget.limit,
                        period_start: budget.period_start,
                    });
                }
            }
        }
        crossings
    }

    /// The caps as stored (`None`: no caps, `NULL`).
    pub fn to_text(&self) -> Option<String> {
        (!self.is_none())
            .then(|| serde_json::to_string(self).ok())
            .flatten()
    }

    /// The caps of a stored text (`NULL`: none; unreadable text: none, so
    /// a broken row never blocks a key).
    pub fn from_text(text: Option<&str>) -> Caps {
        text.and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default()
    }

    /// The stored status code (`NULL` when not exhausted).
    pub fn status_code(&self) -> Option<u8> {
        self.status().map(KeyStatus::code)
    }
}

/// A capped key of a batch, as read (locked) in the ingest transaction.
#[derive(Debug, Clone)]
pub struct Capped {
    pub id: KeyId,
    pub org: OrgId,
    pub caps: Caps,
    /// Its stored exhaustion (`exhausted`).
    pub exhausted: Option<KeyStatus>,
}

/// What a batch did to its capped keys: each key's new caps and whether
/// its status changed (a revision), and the crossings.
#[derive(Debug, Default)]
pub struct Filled {
    pub keys: Vec<(Capped, bool)>,
    pub crossings: Vec<Crossing>,
}

/// Adds `batch` to the caps of its `capped` keys at `now` (refilling first
/// what is due), in one pass over the rows.
pub fn fill(batch: &UsageBatch, capped: Vec<Capped>, now: u64) -> Filled {
    let mut rows: HashMap<KeyId, Vec<&UsageCount>> =
        capped.iter().map(|c| (c.id, Vec::new())).collect();
    for row in &batch.rows {
        if let Some(of_key) = rows.get_mut(&row.key_id) {
            of_key.push(row);
        }
    }
    let mut filled = Filled::default();
    for mut key in capped {
        key.caps.refill(now);
        let of_key = rows.remove(&key.id).unwrap_or_default();
        filled
            .crossings
            .extend(key.caps.add(key.org, key.id, of_key));
        let status = key.caps.status();
        let changed = status != key.exhausted;
        key.exhausted = status;
        filled.keys.push((key, changed));
    }
    filled
}

/// A checked change of a key's caps (`PATCH`, `POST …/usage/reset`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapsChange {
    /// `Some(None)` removes the quota; `Some(Some((requests, period)))` sets it.
    pub quota: Option<Option<(u64, Period)>>,
    /// `Some(None)` removes the cap; `Some(Some((micros, period)))` sets it.
    pub spend: Option<Option<(u64, Period)>>,
    /// Zero what both budgets used in the current period.
    pub reset: bool,
    /// The time of the change (unix seconds).
    pub now: u64,
}

impl CapsChange {
    /// `caps` changed.
    pub fn apply(&self, caps: &Caps) -> Caps {
        let set = |budget: Option<Budget>, asked: Option<Option<(u64, Period)>>| match asked {
            None => budget,
            Some(None) => None,
            Some(Some((limit, period))) => Some(match budget {
                Some(b) => b.changed(limit, period, self.now),
                None => Budget::new(limit, period, self.now),
            }),
        };
        let mut next = Caps {
            quota: set(caps.quota, self.quota),
            spend: set(caps.spend, self.spend),
        };
        next.refill(self.now);
        if self.reset {
            for budget in [next.quota.as_mut(), next.spend.as_mut()]
                .into_iter()
                .flatten()
            {
                budget.reset(self.now);
            }
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAN_31_2030: u64 = 1_896_048_000; // 2030-01-31T00:00:00Z

    fn allowed(minute: u64, count: u64, cost: u64) -> UsageCount {
        UsageCount {
            key_id: KeyId(1),
            minute,
            outcome: ALLOWED.into(),
            count,
            cost_micros: cost,
        }
    }

    #[test]
    fn periods_are_utc_days_and_months() {
        assert_eq!(Period::Month.start(JAN_31_2030 + 5000), 1_893_456_000);
        assert_eq!(Period::Month.next(1_893_456_000), Some(1_896_134_400));
        assert_eq!(Period::Day.next(JAN_31_2030), Some(JAN_31_2030 + 86_400));
        assert_eq!(Period::Lifetime.next(0), None);
    }

    #[test]
    fn crossings_fire_once_a_period() {
        let mut caps = Caps {
            quota: Some(Budget::new(100, Period::Day, JAN_31_2030)),
            spend: None,
        };
        let org = OrgId(7);
        let first = caps.add(org, KeyId(1), &[allowed(JAN_31_2030, 85, 0)]);
        assert_eq!(first.iter().map(|c| c.percent).collect::<Vec<_>>(), [80]);
        assert!(caps
            .add(org, KeyId(1), &[allowed(JAN_31_2030 + 60, 5, 0)])
            .is_empty());
        let full = caps.add(org, KeyId(1), &[allowed(JAN_31_2030 + 120, 50, 0)]);
        assert_eq!(full.iter().map(|c| c.percent).collect::<Vec<_>>(), [100]);
        assert_eq!(caps.status(), Some(KeyStatus::QuotaExhausted));
        // The next day starts again, and both thresholds fire again at once.
        let next = caps.add(org, KeyId(1), &[allowed(JAN_31_2030 + 86_400, 100, 0)]);
        assert_eq!(
            next.iter().map(|c| c.percent).collect::<Vec<_>>(),
            [80, 100]
        );
        // A late minute of the day before counts nothing.
        assert!(caps
            .add(org, KeyId(1), &[allowed(JAN_31_2030, 1, 0)])
            .is_empty());
        assert_eq!(caps.quota.map(|q| q.used), Some(100));
    }

    #[test]
    fn a_raise_keeps_the_count_and_a_reset_zeroes_it() {
        let mut caps = Caps {
            quota: None,
            spend: Some(Budget::new(1000, Period::Month, JAN_31_2030)),
        };
        caps.add(OrgId(1), KeyId(1), &[allowed(JAN_31_2030, 1, 1000)]);
        assert_eq!(caps.status(), Some(KeyStatus::SpendExhausted));
        let raise = CapsChange {
            spend: Some(Some((2000, Period::Month))),
            now: JAN_31_2030,
            ..CapsChange::default()
        };
        let raised = raise.apply(&caps);
        assert_eq!(
            (raised.status(), raised.spend.map(|b| b.used)),
            (None, Some(1000))
        );
        let reset = CapsChange {
            reset: true,
            now: JAN_31_2030,
            ..CapsChange::default()
        };
        assert_eq!(reset.apply(&caps).spend.map(|b| b.used), Some(0));
        let refilled = CapsChange {
            now: JAN_31_2030 + 86_400,
            ..CapsChange::default()
        };
        assert_eq!(refilled.apply(&caps).status(), None);
    }

    #[test]
    fn stored_text_round_trips() {
        let caps = Caps {
            quota: Some(Budget::new(5, Period::Lifetime, 9)),
            spend: None,
        };
        assert_eq!(Caps::from_text(caps.to_text().as_deref()), caps);
        assert_eq!(Caps::default().to_text(), None);
    }
}
