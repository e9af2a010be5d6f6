//! The caps SQL of the SQLite store (crate::store::caps): a batch's capped
//! keys filled in the ingest transaction, and the refill of exhausted keys.

use super::queries::{add_revision, id_of, sql_id};
use crate::store::caps::{self, Capped, Caps, Crossing};
use crate::store::exhausted_status;
use crate::store::usage::UsageBatch;
use crate::store::StoreError;
use keygate::ids::{KeyId, OrgId};
use rusqlite::{params, Connection, Row};

fn capped(row: &Row) -> rusqlite::Result<Capped> {
    Ok(Capped {
        id: KeyId(id_of(row, 0)?),
        org: OrgId(id_of(row, 1)?),
        caps: Caps::from_text(row.get::<_, Option<String>>(2)?.as_deref()),
        exhausted: exhausted_status(row.get(3)?),
    })
}

/// Writes each key's caps; a status change adds a revision.
fn store(conn: &Connection, keys: Vec<(Capped, bool)>) -> Result<usize, StoreError> {
    let mut write =
        conn.prepare_cached("UPDATE api_keys SET caps = ?2, exhausted = ?3 WHERE id = ?1")?;
    let mut changed = 0;
    for (key, status_changed) in keys {
        write.execute(params![
            sql_id(key.id.0),
            key.caps.to_text(),
            key.caps.status_code()
        ])?;
        if status_changed {
            add_revision(conn, key.id)?;
            changed += 1;
        }
    }
    Ok(changed)
}

/// Adds `batch` to the caps of its capped keys; returns the crossings.
pub fn fill(conn: &Connection, batch: &UsageBatch) -> Result<Vec<Crossing>, StoreError> {
    let mut read = conn.prepare_cached(
        "SELECT id, tenant_id, caps, exhausted FROM api_keys WHERE id = ?1 AND caps IS NOT NULL",
    )?;
    let mut keys = Vec::new();
    for key in batch.keys() {
        keys.extend(
            read.query_map([sql_id(key.0)], capped)?
                .collect::<Result<Vec<_>, _>>()?,
        );
    }
    let filled = caps::fill(batch, keys, batch.received_at);
    store(conn, filled.keys)?;
    Ok(filled.crossings)
}

/// Refills the exhausted keys whose period is over at `now`.
pub fn refill(conn: &Connection, now: u64) -> Result<usize, StoreError> {
    let keys = conn
        .prepare_cached(
            "SELECT id, tenant_id, caps, exhausted FROM api_keys WHERE exhausted IS NOT NULL",
        )?
        .query_map([], capped)?
        .collect::<Result<Vec<_>, _>>()?;
    let due = keys
        .into_iter()
        .filter_map(|mut key| {
            key.caps.refill(now).then(|| {
                let changed = key.caps.status() != key.exhausted;
                (key, changed)
            })
        })
        .collect();
    store(conn, due)
}
