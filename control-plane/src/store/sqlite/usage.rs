//! The usage SQL of the SQLite store (crate::store::usage): ingest of a
//! group of batches in the writer's transaction, queries on a reader,
//! compaction.

use super::caps;
use super::queries::sql_id;
use crate::store::usage::{
    self, cutoffs, Granularity, UsageBatch, UsageBucket, UsageQuery, UsageScope, BATCH_RETENTION,
};
use crate::store::{usage_fold, Ingested, StoreError};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::{HashMap, HashSet};

/// A count, time or cost as SQLite's integer (all are far below 2^63).
fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn uint(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Records the ids of `batches` the database has not seen; returns them.
fn record(conn: &Connection, batches: &[UsageBatch]) -> Result<HashSet<String>, StoreError> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO usage_batches (batch_id, received_at) VALUES (?1, ?2) \
         ON CONFLICT (batch_id) DO NOTHING",
    )?;
    let mut recorded = HashSet::new();
    let (ids, times) = usage_fold::ids(batches);
    for (id, at) in ids.into_iter().zip(times) {
        if insert.execute(params![id, int(at)])? > 0 {
            recorded.insert(id.to_string());
        }
    }
    Ok(recorded)
}

/// Counts a group of batches in the writer's transaction
/// (crate::store::usage_fold): each batch unless its id is known; answers
/// per batch, in order.
pub fn ingest(conn: &Connection, batches: &[UsageBatch]) -> Result<Vec<Ingested>, StoreError> {
    let fresh = usage_fold::fresh(batches, &record(conn, batches)?);
    let Some(batch) = usage_fold::merge(batches, &fresh) else {
        return Ok(usage_fold::answers(batches, &fresh, |_| true, Vec::new()));
    };
    let mut tenant_of = conn.prepare_cached(
        "SELECT tenant_id, caps IS NOT NULL, caps, exhausted FROM api_keys WHERE id = ?1",
    )?;
    let mut tenants = HashMap::new();
    let mut capped = Vec::new();
    for key in batch.keys() {
        let found = tenant_of
            .query_row([sql_id(key.0)], |row| {
                let tenant: i64 = row.get(0)?;
                let has_caps: bool = row.get(1)?;
                Ok((
                    tenant,
                    has_caps
                        .then(|| caps::capped(key, tenant, row))
                        .transpose()?,
                ))
            })
            .optional()?;
        tenants.insert(key, found.as_ref().map(|(tenant, _)| *tenant));
        capped.extend(found.and_then(|(_, c)| c));
    }
    let mut add = conn.prepare_cached(
        "INSERT INTO usage_minute (key_id, tenant_id, minute, outcome, count, cost_micros) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (key_id, minute, outcome) DO UPDATE SET \
         count = count + excluded.count, cost_micros = cost_micros + excluded.cost_micros",
    )?;
    for row in &batch.rows {
        if let Some(Some(tenant)) = tenants.get(&row.key_id) {
            add.execute(params![
                sql_id(row.key_id.0),
                tenant,
                int(row.minute),
                row.outcome,
                int(row.count),
                int(row.cost_micros)
            ])?;
        }
    }
    let mut used = conn.prepare_cached(
        "UPDATE api_keys SET last_used_at = ?2 \
         WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
    )?;
    for (key, at) in batch.last_used() {
        used.execute(params![sql_id(key.0), int(at)])?;
    }
    let crossings = caps::fill(conn, &batch, capped)?;
    let known = |k| matches!(tenants.get(&k), Some(Some(_)));
    Ok(usage_fold::answers(batches, &fresh, known, crossings))
}

/// The buckets of `query`.
pub fn query(conn: &Connection, query: &UsageQuery) -> Result<Vec<UsageBucket>, StoreError> {
    let width = int(query.granularity.seconds());
    let hours = if query.granularity == Granularity::Minute {
        ""
    } else {
        " UNION ALL SELECT key_id, tenant_id, hour, outcome, count, cost_micros FROM usage_hour"
    };
    let (filter, value) = match &query.scope {
        UsageScope::Tenant => ("", None),
        UsageScope::Key(id) => (" AND key_id = ?5", Some(sql_id(id.0).into())),
        UsageScope::Owner(owner) => (
            " AND key_id IN (SELECT id FROM api_keys WHERE tenant_id = ?1 AND external_id = ?5)",
            Some(rusqlite::types::Value::Text(owner.clone())),
        ),
    };
    let sql = format!(
        "SELECT at / ?4 * ?4 AS start, outcome, sum(count), sum(cost_micros) FROM \
         (SELECT key_id, tenant_id, minute AS at, outcome, count, cost_micros FROM usage_minute{hours}) \
         WHERE tenant_id = ?1 AND at >= ?2 AND at < ?3{filter} \
         GROUP BY start, outcome ORDER BY start, outcome"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut values: Vec<rusqlite::types::Value> = vec![
        sql_id(query.org.0).into(),
        int(query.from).into(),
        int(query.to).into(),
        width.into(),
    ];
    values.extend(value);
    let rows = stmt
        .query_map(rusqlite::params_from_iter(values), |row| {
            Ok((
                uint(row.get(0)?),
                row.get::<_, String>(1)?,
                uint(row.get(2)?),
                uint(row.get(3)?),
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(usage::buckets(rows))
}

/// Folds and drops what is past retention at `now`.
pub fn compact(conn: &Connection, now: u64) -> Result<usize, StoreError> {
    let (minutes, hours) = cutoffs(now);
    conn.execute(
        "INSERT INTO usage_hour (key_id, tenant_id, hour, outcome, count, cost_micros) \
         SELECT key_id, tenant_id, minute / 3600 * 3600, outcome, sum(count), sum(cost_micros) \
         FROM usage_minute WHERE minute < ?1 GROUP BY key_id, tenant_id, minute / 3600, outcome \
         ON CONFLICT (key_id, hour, outcome) DO UPDATE SET \
         count = count + excluded.count, cost_micros = cost_micros + excluded.cost_micros",
        [int(minutes)],
    )?;
    let folded = conn.execute("DELETE FROM usage_minute WHERE minute < ?1", [int(minutes)])?;
    let dropped = conn.execute("DELETE FROM usage_hour WHERE hour < ?1", [int(hours)])?;
    conn.execute(
        "DELETE FROM usage_batches WHERE received_at < ?1",
        [int(now.saturating_sub(BATCH_RETENTION))],
    )?;
    Ok(folded + dropped)
}
