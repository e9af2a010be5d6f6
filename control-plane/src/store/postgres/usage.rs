//! The usage SQL of the PostgreSQL store (crate::store::usage): a group of
//! batches is a few array statements in one write transaction (ids and rows
//! in sorted order, so concurrent groups of several replicas lock alike),
//! queries on a pooled connection, compaction.

use super::queries::{int, sql_id, uint, Write};
use crate::store::usage::{
    self, cutoffs, Granularity, UsageBatch, UsageBucket, UsageQuery, UsageScope, BATCH_RETENTION,
};
use crate::store::{usage_fold, Ingested, StoreError};
use deadpool_postgres::GenericClient;
use keygate::ids::KeyId;
use std::collections::{HashMap, HashSet};
use tokio_postgres::types::ToSql;

/// A count or cost as BIGINT (both are at most 2^53).
fn count(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A batch's rows as the arrays `unnest` takes.
#[derive(Default)]
struct Columns<'a> {
    keys: Vec<i64>,
    tenants: Vec<i64>,
    minutes: Vec<i64>,
    outcomes: Vec<&'a str>,
    counts: Vec<i64>,
    costs: Vec<i64>,
}

/// A known key's tenant and when it was last used (as stored).
struct Known {
    tenant: i64,
    last_used: Option<i64>,
}

/// Each of `keys` the database knows. One index probe per key: `id =
/// ANY(…)` or a join with thousands of keys is planned as a scan of the
/// whole key table.
async fn known(w: &Write<'_>, keys: &[i64]) -> Result<HashMap<i64, Known>, StoreError> {
    let rows =
        w.tx.query(
            "SELECT u.id, (SELECT tenant_id FROM api_keys k WHERE k.id = u.id), \
             (SELECT last_used_at FROM api_keys k WHERE k.id = u.id) \
             FROM unnest($1::bigint[]) AS u(id)",
            &[&keys],
        )
        .await?;
    let mut known = HashMap::new();
    for row in &rows {
        if let Some(tenant) = row.try_get::<_, Option<i64>>(1)? {
            let last_used = row.try_get(2)?;
            known.insert(row.try_get::<_, i64>(0)?, Known { tenant, last_used });
        }
    }
    Ok(known)
}

/// Moves `last_used_at` of the keys whose latest use in `batch` is later
/// than the stored one (most groups of an interval report a minute
/// already stored: no statement at all).
async fn last_used(
    w: &Write<'_>,
    batch: &UsageBatch,
    known: &HashMap<i64, Known>,
) -> Result<(), StoreError> {
    let (keys, at): (Vec<i64>, Vec<i64>) = batch
        .last_used()
        .into_iter()
        .map(|(k, at)| (sql_id(k.0), count(at)))
        .filter(|(k, at)| {
            known
                .get(k)
                .is_some_and(|key| key.last_used.is_none_or(|used| used < *at))
        })
        .unzip();
    if keys.is_empty() {
        return Ok(());
    }
    w.tx.execute(
        "UPDATE api_keys k SET last_used_at = u.at \
         FROM unnest($1::bigint[], $2::bigint[]) AS u(id, at) \
         WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)",
        &[&keys, &at],
    )
    .await?;
    Ok(())
}

/// Records the ids of `batches` the database has not seen; returns them.
async fn record(w: &Write<'_>, batches: &[UsageBatch]) -> Result<HashSet<String>, StoreError> {
    let (ids, times) = usage_fold::ids(batches);
    let times = times.into_iter().map(int).collect::<Result<Vec<_>, _>>()?;
    let rows =
        w.tx.query(
            "INSERT INTO usage_batches (batch_id, received_at) \
             SELECT * FROM unnest($1::text[], $2::bigint[]) ORDER BY 1 \
             ON CONFLICT (batch_id) DO NOTHING RETURNING batch_id",
            &[&ids, &times],
        )
        .await?;
    rows.iter()
        .map(|row| Ok(row.try_get::<_, String>(0)?))
        .collect()
}

/// Counts a group of batches in one transaction (crate::store::usage_fold):
/// each batch unless its id is known; answers per batch, in order.
pub async fn ingest(
    w: &mut Write<'_>,
    batches: &[UsageBatch],
) -> Result<Vec<Ingested>, StoreError> {
    let fresh = usage_fold::fresh(batches, &record(w, batches).await?);
    let Some(batch) = usage_fold::merge(batches, &fresh) else {
        return Ok(usage_fold::answers(batches, &fresh, |_| true, Vec::new()));
    };
    // Every statement below reads or writes the group's keys by primary
    // key: nested loops of index probes. A hash or merge join with the
    // group's arrays would read the whole key table (1M keys: most of a
    // group's time, measured).
    w.tx.batch_execute("SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off")
        .await?;
    let keys: Vec<i64> = batch.keys().iter().map(|k| sql_id(k.0)).collect();
    let known = known(w, &keys).await?;
    let mut columns = Columns::default();
    for row in &batch.rows {
        let key = sql_id(row.key_id.0);
        let Some(Known { tenant, .. }) = known.get(&key) else {
            continue;
        };
        columns.keys.push(key);
        columns.tenants.push(*tenant);
        columns.minutes.push(int(row.minute)?);
        columns.outcomes.push(&row.outcome);
        columns.counts.push(count(row.count));
        columns.costs.push(count(row.cost_micros));
    }
    w.tx.execute(
        "INSERT INTO usage_minute (key_id, tenant_id, minute, outcome, count, cost_micros) \
         SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], \
              $5::bigint[], $6::bigint[]) AS u(key_id, tenant_id, minute, outcome, count, cost) \
         ORDER BY key_id, minute, outcome \
         ON CONFLICT (key_id, minute, outcome) DO UPDATE SET \
         count = usage_minute.count + EXCLUDED.count, \
         cost_micros = usage_minute.cost_micros + EXCLUDED.cost_micros",
        &[
            &columns.keys,
            &columns.tenants,
            &columns.minutes,
            &columns.outcomes,
            &columns.counts,
            &columns.costs,
        ],
    )
    .await?;
    last_used(w, &batch, &known).await?;
    let crossings = super::caps::fill(w, &batch).await?;
    let is_known = |k: KeyId| known.contains_key(&sql_id(k.0));
    Ok(usage_fold::answers(batches, &fresh, is_known, crossings))
}

/// The buckets of `query`.
pub async fn query(
    client: &impl GenericClient,
    query: &UsageQuery,
) -> Result<Vec<UsageBucket>, StoreError> {
    let hours = if query.granularity == Granularity::Minute {
        ""
    } else {
        " UNION ALL SELECT key_id, tenant_id, hour, outcome, count, cost_micros FROM usage_hour"
    };
    let (org, from, to) = (sql_id(query.org.0), int(query.from)?, int(query.to)?);
    let width = int(query.granularity.seconds())?;
    let (key, owner);
    let mut values: Vec<&(dyn ToSql + Sync)> = vec![&org, &from, &to, &width];
    let filter = match &query.scope {
        UsageScope::Tenant => "",
        UsageScope::Key(id) => {
            key = sql_id(id.0);
            values.push(&key);
            " AND key_id = $5"
        }
        UsageScope::Owner(name) => {
            owner = name.as_str();
            values.push(&owner);
            " AND key_id IN (SELECT id FROM api_keys WHERE tenant_id = $1 AND external_id = $5)"
        }
    };
    let sql = format!(
        "SELECT at / $4 * $4 AS start, outcome, sum(count)::bigint, sum(cost_micros)::bigint FROM \
         (SELECT key_id, tenant_id, minute AS at, outcome, count, cost_micros FROM usage_minute{hours}) u \
         WHERE tenant_id = $1 AND at >= $2 AND at < $3{filter} \
         GROUP BY start, outcome ORDER BY start, outcome"
    );
    let stmt = client.prepare_cached(&sql).await?;
    let rows = client.query(&stmt, &values).await?;
    let rows = rows
        .iter()
        .map(|row| {
            Ok((
                uint(row, 0)?,
                row.try_get::<_, String>(1)?,
                uint(row, 2)?,
                uint(row, 3)?,
            ))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(usage::buckets(rows))
}

/// Folds and drops what is past retention at `now`.
pub async fn compact(w: &Write<'_>, now: u64) -> Result<usize, StoreError> {
    let (minutes, hours) = cutoffs(now);
    let (minutes, hours) = (int(minutes)?, int(hours)?);
    w.tx.execute(
        "INSERT INTO usage_hour (key_id, tenant_id, hour, outcome, count, cost_micros) \
         SELECT key_id, tenant_id, minute / 3600 * 3600, outcome, sum(count), sum(cost_micros) \
         FROM usage_minute WHERE minute < $1 GROUP BY key_id, tenant_id, minute / 3600, outcome \
         ORDER BY key_id, 3, outcome \
         ON CONFLICT (key_id, hour, outcome) DO UPDATE SET \
         count = usage_hour.count + EXCLUDED.count, \
         cost_micros = usage_hour.cost_micros + EXCLUDED.cost_micros",
        &[&minutes],
    )
    .await?;
    let folded =
        w.tx.execute("DELETE FROM usage_minute WHERE minute < $1", &[&minutes])
            .await?;
    let dropped =
        w.tx.execute("DELETE FROM usage_hour WHERE hour < $1", &[&hours])
            .await?;
    let batches = int(now.saturating_sub(BATCH_RETENTION))?;
    w.tx.execute(
        "DELETE FROM usage_batches WHERE received_at < $1",
        &[&batches],
    )
    .await?;
    Ok(usize::try_from(folded + dropped).unwrap_or(usize::MAX))
}
