//! The caps SQL of the SQLite store (crate::store::caps): a batch's capped
//! keys filled in the ingest transaction, and the refill of exhausted keys.

use super::queries::{add_revision, id_of, sql_id};
use crate::store::caps::{self, Capped, Caps, Crossing};
use crate::store::exhausted_status;
use crate::store::usage::UsageBatch;
use crate::store::StoreError;
use keygate::ids::{KeyId, OrgId};
use rusqlite::{params, Connection, Row};

/// The capped key `id` of tenant `tenant` (as stored) from a row whose
/// columns 2 and 3 are `caps` and `exhausted`.
pub fn capped(id: KeyId, tenant: i64, row: &Row) -> rusqlite::Result<Capped> {
    Ok(Capped {
        id,
        org: OrgId(u64::from_ne_bytes(tenant.to_ne_bytes())),
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

/// Adds `batch` to the caps of its `capped` keys (read in the ingest's
/// transaction); returns the crossings.
pub fn fill(
    conn: &Connection,
    batch: &UsageBatch,
    capped: Vec<Capped>,
) -> Result<Vec<Crossing>, StoreError> {
    if capped.is_empty() {
        return Ok(Vec::new());
    }
    let filled = caps::fill(batch, capped, batch.received_at);
    store(conn, filled.keys)?;
    Ok(filled.crossings)
}

/// Refills the exhausted keys whose period is over at `now`.
pub fn refill(conn: &Connection, now: u64) -> Result<usize, StoreError> {
    let keys = conn
        .prepare_cached(
            "SELECT id, tenant_id, caps, exhausted FROM api_keys WHERE exhausted IS NOT NULL",
        )?
        .query_map([], |row| capped(KeyId(id_of(row, 0)?), row.get(1)?, row))?
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
