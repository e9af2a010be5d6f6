//! What the store keeps of usage (SPEC §11): the rows of one ingested batch,
//! a usage query and its buckets, and the retention of both row kinds.
//!
//! Rows are one per (key, minute, outcome) with a count, not one per
//! (key, minute) with a column per outcome: a new refusal reason of the core
//! needs no migration, and a key that only ever succeeds stores one row a
//! minute. The cost the upstream reported is kept on the `allowed` row.

use keygate::ids::{KeyId, OrgId};
use std::collections::BTreeMap;

/// Minute rows are kept this long (seconds), then folded into hourly rows.
pub const MINUTE_RETENTION: u64 = 48 * 3600;
/// Hourly rows are kept this long (seconds).
pub const HOUR_RETENTION: u64 = 400 * 86_400;
/// Batch ids are remembered this long (seconds).
pub const BATCH_RETENTION: u64 = 48 * 3600;
/// The outcome that carries the cost.
pub const ALLOWED: &str = "allowed";

/// One (key, minute, outcome) of a batch, summed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageCount {
    pub key_id: KeyId,
    pub minute: u64,
    pub outcome: String,
    pub count: u64,
    pub cost_micros: u64,
}

/// One checked batch: its id and its rows, each (key, minute, outcome) once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageBatch {
    pub batch_id: String,
    /// Unix seconds it arrived.
    pub received_at: u64,
    pub rows: Vec<UsageCount>,
}

impl UsageBatch {
    /// Every key of the batch, once.
    pub fn keys(&self) -> Vec<KeyId> {
        let mut keys: Vec<KeyId> = self.rows.iter().map(|r| r.key_id).collect();
        keys.sort_unstable_by_key(|k| k.0);
        keys.dedup();
        keys
    }

    /// Per key, the latest minute with allowed requests.
    pub fn last_used(&self) -> Vec<(KeyId, u64)> {
        let mut latest = BTreeMap::new();
        for row in self
            .rows
            .iter()
            .filter(|r| r.outcome == ALLOWED && r.count > 0)
        {
            let at = latest.entry(row.key_id.0).or_insert(row.minute);
            *at = (*at).max(row.minute);
        }
        latest.into_iter().map(|(k, at)| (KeyId(k), at)).collect()
    }
}

/// Bucket width of a usage query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Minute,
    Hour,
    Day,
}

impl Granularity {
    /// Seconds in one bucket.
    pub fn seconds(self) -> u64 {
        match self {
            Granularity::Minute => 60,
            Granularity::Hour => 3600,
            Granularity::Day => 86_400,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Minute => "minute",
            Granularity::Hour => "hour",
            Granularity::Day => "day",
        }
    }
}

/// Which keys of a tenant a usage query sums.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageScope {
    Tenant,
    Key(KeyId),
    Owner(String),
}

/// One usage query: buckets starting in `[from, to)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageQuery {
    pub org: OrgId,
    pub scope: UsageScope,
    pub from: u64,
    pub to: u64,
    pub granularity: Granularity,
}

/// One bucket with data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageBucket {
    /// Unix seconds.
    pub start: u64,
    /// Count per outcome, in name order.
    pub outcomes: BTreeMap<String, u64>,
    pub cost_micros: u64,
}

/// Folds (bucket start, outcome, count, cost) rows in bucket order into buckets.
pub fn buckets(rows: impl IntoIterator<Item = (u64, String, u64, u64)>) -> Vec<UsageBucket> {
    let mut out: Vec<UsageBucket> = Vec::new();
    for (start, outcome, count, cost) in rows {
        match out.last_mut() {
            Some(last) if last.start == start => {
                *last.outcomes.entry(outcome).or_default() += count;
                last.cost_micros = last.cost_micros.saturating_add(cost);
            }
            _ => out.push(UsageBucket {
                start,
                outcomes: BTreeMap::from([(outcome, count)]),
                cost_micros: cost,
            }),
        }
    }
    out
}

/// Where compaction cuts at `now`: minute rows before the first returned
/// value (a whole hour) fold into hours; hourly rows before the second go.
pub fn cutoffs(now: u64) -> (u64, u64) {
    let minutes = now.saturating_sub(MINUTE_RETENTION) / 3600 * 3600;
    (minutes, now.saturating_sub(HOUR_RETENTION))
}
