//! The caps SQL of the PostgreSQL store (crate::store::caps): the capped
//! keys of a group of usage batches locked (in key order, one index probe
//! each) and filled in the ingest transaction, and the refill of exhausted
//! keys.

use super::queries::{add_revision, id_of, sql_id, Write};
use crate::store::caps::{self, Capped, Caps, Crossing};
use crate::store::exhausted_status;
use crate::store::usage::UsageBatch;
use crate::store::StoreError;
use keygate::ids::{KeyId, OrgId};
use tokio_postgres::Row;

fn capped(row: &Row) -> Result<Capped, StoreError> {
    Ok(Capped {
        id: KeyId(id_of(row, 0)?),
        org: OrgId(id_of(row, 1)?),
        caps: Caps::from_text(row.try_get(2)?),
        exhausted: exhausted_status(row.try_get::<_, Option<i32>>(3)?.map(i64::from)),
    })
}

/// Writes each key's caps; a status change adds a revision.
async fn store(w: &mut Write<'_>, keys: Vec<(Capped, bool)>) -> Result<usize, StoreError> {
    let (mut ids, mut texts, mut codes) = (Vec::new(), Vec::new(), Vec::new());
    let mut revised = Vec::new();
    for (key, status_changed) in keys {
        ids.push(sql_id(key.id.0));
        texts.push(key.caps.to_text());
        codes.push(key.caps.status_code().map(i32::from));
        if status_changed {
            revised.push(key.id);
        }
    }
    w.tx.execute(
        "UPDATE api_keys k SET caps = u.caps, exhausted = u.exhausted \
         FROM unnest($1::bigint[], $2::text[], $3::integer[]) AS u(id, caps, exhausted) \
         WHERE k.id = u.id",
        &[&ids, &texts, &codes],
    )
    .await?;
    for id in &revised {
        add_revision(w, *id).await?;
    }
    Ok(revised.len())
}

/// Adds `batch` to the caps of its capped keys; returns the crossings.
pub async fn fill(w: &mut Write<'_>, batch: &UsageBatch) -> Result<Vec<Crossing>, StoreError> {
    let keys: Vec<i64> = batch.keys().iter().map(|k| sql_id(k.0)).collect();
    let rows =
        w.tx.query(
            "SELECT k.* FROM unnest($1::bigint[]) AS u(id), LATERAL \
             (SELECT id, tenant_id, caps, exhausted FROM api_keys \
              WHERE id = u.id AND caps IS NOT NULL FOR UPDATE) AS k",
            &[&keys],
        )
        .await?;
    let capped = rows.iter().map(capped).collect::<Result<Vec<_>, _>>()?;
    if capped.is_empty() {
        return Ok(Vec::new());
    }
    let filled = caps::fill(batch, capped, batch.received_at);
    store(w, filled.keys).await?;
    Ok(filled.crossings)
}

/// Refills the exhausted keys whose period is over at `now`.
pub async fn refill(w: &mut Write<'_>, now: u64) -> Result<usize, StoreError> {
    let rows =
        w.tx.query(
            "SELECT id, tenant_id, caps, exhausted FROM api_keys \
             WHERE exhausted IS NOT NULL ORDER BY id FOR UPDATE",
            &[],
        )
        .await?;
    let mut due = Vec::new();
    for row in &rows {
        let mut key = capped(row)?;
        if key.caps.refill(now) {
            let changed = key.caps.status() != key.exhausted;
            due.push((key, changed));
        }
    }
    if due.is_empty() {
        return Ok(0);
    }
    store(w, due).await
}
