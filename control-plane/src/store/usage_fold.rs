//! The fold of a group of usage batches into one write (SPEC §11, §18):
//! which batches of the group count (the first of each id the database had
//! not seen), their rows summed per (key, minute, outcome), and each
//! batch's own answer. Both backends write a group this way, in one
//! transaction with every batch id it counts.

use super::caps::Crossing;
use super::usage::{UsageBatch, UsageCount};
use super::Ingested;
use keygate::ids::KeyId;
use std::collections::{HashMap, HashSet};

/// The distinct batch ids of `batches`, sorted (the order they are locked
/// in), each with the time its first batch arrived.
pub fn ids(batches: &[UsageBatch]) -> (Vec<&str>, Vec<u64>) {
    let mut first: HashMap<&str, u64> = HashMap::new();
    for batch in batches {
        first
            .entry(batch.batch_id.as_str())
            .or_insert(batch.received_at);
    }
    let mut ids: Vec<(&str, u64)> = first.into_iter().collect();
    ids.sort_unstable();
    ids.into_iter().unzip()
}

/// Per batch, whether it counts: its id is among the ids the database
/// recorded now (`recorded`) and no earlier batch of the group has it.
pub fn fresh(batches: &[UsageBatch], recorded: &HashSet<String>) -> Vec<bool> {
    let mut taken = HashSet::new();
    batches
        .iter()
        .map(|b| recorded.contains(&b.batch_id) && taken.insert(b.batch_id.as_str()))
        .collect()
}

/// The rows of the batches that count, summed per (key, minute, outcome)
/// and in that order; `None` if none counts. The fold has no id of its
/// own; it arrived when its last batch did.
pub fn merge(batches: &[UsageBatch], fresh: &[bool]) -> Option<UsageBatch> {
    let counted: Vec<&UsageBatch> = batches
        .iter()
        .zip(fresh)
        .filter_map(|(b, f)| f.then_some(b))
        .collect();
    let received_at = counted.iter().map(|b| b.received_at).max()?;
    let mut sums: HashMap<(KeyId, u64, &str), (u64, u64)> = HashMap::new();
    for row in counted.iter().flat_map(|b| &b.rows) {
        let sum = sums
            .entry((row.key_id, row.minute, row.outcome.as_str()))
            .or_default();
        sum.0 = sum.0.saturating_add(row.count);
        sum.1 = sum.1.saturating_add(row.cost_micros);
    }
    let mut rows: Vec<UsageCount> = sums
        .into_iter()
        .map(
            |((key_id, minute, outcome), (count, cost_micros))| UsageCount {
                key_id,
                minute,
                outcome: outcome.to_string(),
                count,
                cost_micros,
            },
        )
        .collect();
    rows.sort_unstable_by(|a, b| {
        (a.key_id.0, a.minute, &a.outcome).cmp(&(b.key_id.0, b.minute, &b.outcome))
    });
    Some(UsageBatch {
        batch_id: String::new(),
        received_at,
        rows,
    })
}

/// Each batch's answer: a duplicate, or counted with its own unknown keys
/// (those `known` denies). The group's threshold crossings go with the
/// first batch that counts, so each is announced once.
pub fn answers(
    batches: &[UsageBatch],
    fresh: &[bool],
    known: impl Fn(KeyId) -> bool,
    crossings: Vec<Crossing>,
) -> Vec<Ingested> {
    let mut crossings = Some(crossings);
    batches
        .iter()
        .zip(fresh)
        .map(|(batch, counts)| {
            if !counts {
                return Ingested::Duplicate;
            }
            Ingested::Applied {
                unknown_keys: batch.keys().into_iter().filter(|k| !known(*k)).count(),
                crossings: crossings.take().unwrap_or_default(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: u64, minute: u64, outcome: &str, count: u64, cost: u64) -> UsageCount {
        UsageCount {
            key_id: KeyId(key),
            minute,
            outcome: outcome.to_string(),
            count,
            cost_micros: cost,
        }
    }

    fn batch(id: &str, at: u64, rows: Vec<UsageCount>) -> UsageBatch {
        UsageBatch {
            batch_id: id.to_string(),
            received_at: at,
            rows,
        }
    }

    fn group() -> Vec<UsageBatch> {
        vec![
            batch("b", 10, vec![row(2, 60, "allowed", 3, 5)]),
            batch(
                "a",
                12,
                vec![row(1, 60, "allowed", 1, 0), row(2, 60, "allowed", 4, 1)],
            ),
            batch("b", 11, vec![row(2, 60, "allowed", 3, 5)]),
            batch("c", 13, vec![row(2, 120, "rate_limited", 9, 0)]),
        ]
    }

    #[test]
    fn ids_are_distinct_and_sorted_with_their_first_arrival() {
        assert_eq!(ids(&group()), (vec!["a", "b", "c"], vec![12, 10, 13]));
    }

    #[test]
    fn each_recorded_id_counts_once_and_rows_are_summed() {
        let group = group();
        let recorded = HashSet::from(["a".to_string(), "b".to_string()]);
        let fresh = fresh(&group, &recorded);
        assert_eq!(fresh, [true, true, false, false]);
        let merged = merge(&group, &fresh).unwrap();
        assert_eq!(merged.received_at, 12);
        assert_eq!(
            merged.rows,
            [row(1, 60, "allowed", 1, 0), row(2, 60, "allowed", 7, 6)]
        );
        assert_eq!(merge(&group, &[false; 4]), None);
    }

    #[test]
    fn answers_are_per_batch_and_crossings_go_once() {
        let group = group();
        let crossing = Crossing {
            org: keygate::ids::OrgId(1),
            key_id: KeyId(2),
            kind: crate::store::caps::CapKind::Quota,
            percent: 80,
            used: 8,
            limit: 10,
            period_start: 0,
        };
        let fresh = [true, true, false, true];
        let answers = answers(&group, &fresh, |k| k != KeyId(1), vec![crossing.clone()]);
        let applied = |unknown_keys, crossings| Ingested::Applied {
            unknown_keys,
            crossings,
        };
        assert_eq!(
            answers,
            [
                applied(0, vec![crossing]),
                applied(1, vec![]),
                Ingested::Duplicate,
                applied(0, vec![]),
            ]
        );
    }
}
