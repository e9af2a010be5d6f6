//! The SQL of the SQLite store, one function per operation, on a plain
//! connection: the caller decides the transaction.

use crate::store::caps::Caps;
use crate::store::{
    exhausted_status, key_status, limit_to_store, stored_limit, FeedAnswer, KeyPage, KeyPatch,
    KeyQuery, KeyRecord, Metadata, NewKey, OldKeyFate, PageAsk, Patched, SqlValue, StoreError,
    Tenant, TenantPage,
};
use keygate::feed::{FeedEntry, FeedOp, KeySet};
use keygate::ids::{KeyId, OrgId};
use keygate::key::Environment;
use keygate::limits::RateLimits;
use rusqlite::types::Type;
use rusqlite::{ffi, params, Connection, OptionalExtension, Row};

const KEY_COLUMNS: &str = "id, tenant_id, name, display_prefix, scopes, environment, tier, \
                           created_at, expires_at, revoked_at, rate_per_minute, rate_per_day, \
                           external_id, (SELECT suspended FROM tenants t WHERE t.id = tenant_id), \
                           metadata, last_used_at, caps";
/// Columns in [`KEY_COLUMNS`]: the index of a column selected after them.
const KEY_COLUMNS_LEN: usize = 17;
const TENANT_COLUMNS: &str = "id, name, email, created_at, plan, suspended";
const FEED_COLUMNS: &str = "key_hash, id, tenant_id, expires_at, scopes, tier, environment, \
                            in_table, rate_per_minute, rate_per_day, external_id, \
                            (SELECT suspended FROM tenants t WHERE t.id = tenant_id), exhausted";

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        match e.sqlite_error().map(|s| s.extended_code) {
            Some(ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY) => {
                StoreError::Duplicate
            }
            Some(ffi::SQLITE_CONSTRAINT_FOREIGNKEY) => StoreError::UnknownTenant,
            _ => StoreError::Backend(e.to_string()),
        }
    }
}

/// A 64-bit id as SQLite's signed integer (same bits).
pub(super) fn sql_id(id: u64) -> i64 {
    i64::from_ne_bytes(id.to_ne_bytes())
}

/// Back from SQLite's signed integer.
pub(super) fn id_of(row: &Row, column: usize) -> rusqlite::Result<u64> {
    let raw: i64 = row.get(column)?;
    Ok(u64::from_ne_bytes(raw.to_ne_bytes()))
}

fn environment_of(row: &Row, column: usize) -> rusqlite::Result<Environment> {
    let text: String = row.get(column)?;
    text.parse()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(column, Type::Text, Box::new(e)))
}

/// The limits in columns `at` and `at + 1`.
fn limits_of(row: &Row, at: usize) -> rusqlite::Result<RateLimits> {
    Ok(RateLimits {
        per_minute: stored_limit(row.get(at)?),
        per_day: stored_limit(row.get(at + 1)?),
    })
}

fn key_record(row: &Row) -> rusqlite::Result<KeyRecord> {
    Ok(KeyRecord {
        id: KeyId(id_of(row, 0)?),
        org_id: OrgId(id_of(row, 1)?),
        name: row.get(2)?,
        display_prefix: row.get(3)?,
        scopes: row.get(4)?,
        environment: environment_of(row, 5)?,
        tier: row.get(6)?,
        created_at: row.get(7)?,
        expires_at: row.get(8)?,
        revoked_at: row.get(9)?,
        limits: limits_of(row, 10)?,
        external_id: row.get(12)?,
        tenant_suspended: row.get(13)?,
        metadata: metadata_of(row, 14)?,
        last_used_at: row.get(15)?,
        caps: Caps::from_text(row.get::<_, Option<String>>(16)?.as_deref()),
    })
}

fn metadata_of(row: &Row, column: usize) -> rusqlite::Result<Option<Metadata>> {
    let text: Option<String> = row.get(column)?;
    text.map(|t| serde_json::from_str(&t))
        .transpose()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(column, Type::Text, Box::new(e)))
}

/// Metadata as stored: its JSON text.
fn metadata_text(metadata: Option<&Metadata>) -> Result<Option<String>, StoreError> {
    metadata
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Backend(e.to_string()))
}

/// A row of `FEED_COLUMNS`: the upsert to send, or the remove when the key
/// left the table.
fn feed_op(row: &Row) -> rusqlite::Result<FeedOp> {
    let hash: [u8; 32] = row.get(0)?;
    let in_table: bool = row.get(7)?;
    if !in_table {
        return Ok(FeedOp::Remove(hash));
    }
    Ok(FeedOp::Upsert(FeedEntry {
        hash,
        key_id: KeyId(id_of(row, 1)?),
        org_id: OrgId(id_of(row, 2)?),
        expires_at: row.get::<_, Option<u64>>(3)?.unwrap_or(0),
        scopes: row.get(4)?,
        tier: row.get(5)?,
        environment: environment_of(row, 6)?,
        status: key_status(row.get(11)?, exhausted_status(row.get(12)?)),
        limits: limits_of(row, 8)?,
        external_id: row.get(10)?,
    }))
}

pub fn insert_tenant(conn: &Connection, tenant: &Tenant) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO tenants (id, name, email, created_at, plan) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        sql_id(tenant.id.0),
        tenant.name,
        tenant.email,
        tenant.created_at,
        tenant.plan
    ])?;
    Ok(())
}

fn tenant_row(row: &Row) -> rusqlite::Result<Tenant> {
    Ok(Tenant {
        id: OrgId(id_of(row, 0)?),
        name: row.get(1)?,
        email: row.get(2)?,
        created_at: row.get(3)?,
        plan: row.get(4)?,
        suspended: row.get(5)?,
    })
}

pub fn tenant(conn: &Connection, org: OrgId) -> Result<Option<Tenant>, StoreError> {
    let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([sql_id(org.0)], tenant_row)
        .optional()?)
}

/// A page of tenants in (signed) id order.
pub fn list_tenants(conn: &Connection, page: TenantPage) -> Result<Vec<Tenant>, StoreError> {
    let sql = format!(
        "SELECT {TENANT_COLUMNS} FROM tenants WHERE ?1 IS NULL OR id > ?1 ORDER BY id LIMIT ?2"
    );
    let after = page.after.map(|org| sql_id(org.0));
    let limit = i64::try_from(page.limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![after, limit], tenant_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn set_plan(conn: &Connection, org: OrgId, plan: &str) -> Result<Option<Tenant>, StoreError> {
    conn.prepare_cached("UPDATE tenants SET plan = ?1 WHERE id = ?2")?
        .execute(params![plan, sql_id(org.0)])?;
    tenant(conn, org)
}

pub fn plans_in_use(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT DISTINCT plan FROM tenants ORDER BY plan")?;
    let rows = stmt.query_map([], |row| row.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Inserts a key and its revision.
pub fn insert_key(conn: &Connection, key: &NewKey) -> Result<(), StoreError> {
    let r = &key.record;
    conn.prepare_cached(
        "INSERT INTO api_keys (id, tenant_id, name, key_hash, display_prefix, scopes, \
         environment, tier, created_at, expires_at, revoked_at, in_table, rate_per_minute, \
         rate_per_day, external_id, metadata, caps, exhausted) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL, 1, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?
    .execute(params![
        sql_id(r.id.0),
        sql_id(r.org_id.0),
        r.name,
        key.hash,
        r.display_prefix,
        r.scopes,
        r.environment.as_str(),
        r.tier,
        r.created_at,
        r.expires_at,
        limit_to_store(r.limits.per_minute),
        limit_to_store(r.limits.per_day),
        r.external_id,
        metadata_text(r.metadata.as_ref())?,
        r.caps.to_text(),
        r.caps.status_code(),
    ])?;
    add_revision(conn, r.id)
}

/// Sets a tenant's suspension; a change appends a revision for each of
/// its keys in the table. `None` for an unknown tenant.
pub fn set_suspended(
    conn: &Connection,
    org: OrgId,
    suspended: bool,
) -> Result<Option<usize>, StoreError> {
    let Some(current) = is_suspended(conn, org)? else {
        return Ok(None);
    };
    if current == suspended {
        return Ok(Some(0));
    }
    conn.prepare_cached("UPDATE tenants SET suspended = ?2 WHERE id = ?1")?
        .execute(params![sql_id(org.0), suspended])?;
    let ids: Vec<u64> = conn
        .prepare_cached(
            "SELECT id FROM api_keys WHERE tenant_id = ?1 AND in_table = 1 ORDER BY seq",
        )?
        .query_map([sql_id(org.0)], |row| id_of(row, 0))?
        .collect::<Result<_, _>>()?;
    for &id in &ids {
        add_revision(conn, KeyId(id))?;
    }
    Ok(Some(ids.len()))
}

/// Whether a tenant is suspended; `None` for an unknown tenant.
fn is_suspended(conn: &Connection, org: OrgId) -> Result<Option<bool>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT suspended FROM tenants WHERE id = ?1")?
        .query_row([sql_id(org.0)], |row| row.get(0))
        .optional()?)
}

/// Moves the version on and records that `id` changed at it.
pub(super) fn add_revision(conn: &Connection, id: KeyId) -> Result<(), StoreError> {
    let version: u64 = conn
        .prepare_cached("UPDATE feed_state SET version = version + 1 RETURNING version")?
        .query_row([], |row| row.get(0))?;
    conn.prepare_cached("INSERT INTO key_revisions (version, key_id) VALUES (?1, ?2)")?
        .execute(params![version, sql_id(id.0)])?;
    Ok(())
}

pub fn key_by_hash(conn: &Connection, hash: &[u8; 32]) -> Result<Option<KeyRecord>, StoreError> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([hash], key_record)
        .optional()?)
}

pub fn key(conn: &Connection, org: OrgId, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1 AND tenant_id = ?2");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params![sql_id(id.0), sql_id(org.0)], key_record)
        .optional()?)
}

/// One page of a tenant's keys in `seq` order (the `api_keys_by_tenant`
/// index gives the range and the order).
pub fn list_page(conn: &Connection, org: OrgId, query: &KeyQuery) -> Result<KeyPage, StoreError> {
    let (conditions, values) = query.conditions(|n| format!("?{n}"));
    let limit = values.len() + 2;
    let sql = format!(
        "SELECT {KEY_COLUMNS}, seq FROM api_keys WHERE tenant_id = ?1{conditions} \
         ORDER BY seq LIMIT ?{limit}"
    );
    let mut bound: Vec<rusqlite::types::Value> = vec![sql_id(org.0).into()];
    bound.extend(values.into_iter().map(|v| match v {
        SqlValue::Int(i) => i.into(),
        SqlValue::Text(t) => t.into(),
    }));
    bound.push(query.rows().into());
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(bound), |row| {
            Ok((key_record(row)?, row.get::<_, u64>(KEY_COLUMNS_LEN)?))
        })?
        .collect::<Result<_, _>>()?;
    Ok(KeyPage::of(query, rows))
}

/// Applies `patch` to an active key; a change of its table entry adds a
/// revision.
pub fn patch_key(
    conn: &Connection,
    org: OrgId,
    id: KeyId,
    patch: &KeyPatch,
    now: u64,
) -> Result<Option<Patched>, StoreError> {
    let Some(old) = key(conn, org, id)? else {
        return Ok(None);
    };
    if !old.is_active(now) {
        return Err(StoreError::Inactive);
    }
    let record = patch.apply(&old);
    conn.prepare_cached(
        "UPDATE api_keys SET name = ?1, scopes = ?2, tier = ?3, expires_at = ?4, metadata = ?5, \
         rate_per_minute = ?6, rate_per_day = ?7, external_id = ?8, caps = ?10, exhausted = ?11 \
         WHERE id = ?9",
    )?
    .execute(params![
        record.name,
        record.scopes,
        record.tier,
        record.expires_at,
        metadata_text(record.metadata.as_ref())?,
        limit_to_store(record.limits.per_minute),
        limit_to_store(record.limits.per_day),
        record.external_id,
        sql_id(id.0),
        record.caps.to_text(),
        record.caps.status_code(),
    ])?;
    let feed_changed = record.feed_differs(&old);
    if feed_changed {
        add_revision(conn, id)?;
    }
    Ok(Some(Patched {
        record,
        feed_changed,
    }))
}

/// Revokes a key; a key still in the table leaves it with a revision.
pub fn revoke(
    conn: &Connection,
    org: OrgId,
    id: KeyId,
    now: u64,
) -> Result<Option<KeyRecord>, StoreError> {
    let state: Option<(bool, Option<u64>)> = conn
        .prepare_cached(
            "SELECT in_table, revoked_at FROM api_keys WHERE id = ?1 AND tenant_id = ?2",
        )?
        .query_row(params![sql_id(id.0), sql_id(org.0)], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    match state {
        None => return Ok(None),
        Some((_, Some(_revoked))) => {}
        Some((in_table, None)) => {
            conn.prepare_cached("UPDATE api_keys SET revoked_at = ?1, in_table = 0 WHERE id = ?2")?
                .execute(params![now, sql_id(id.0)])?;
            if in_table {
                add_revision(conn, id)?;
            }
        }
    }
    key(conn, org, id)
}

/// Applies a rotation's `fate` to the old key, which must be active.
pub fn retire_rotated(
    conn: &Connection,
    org: OrgId,
    id: KeyId,
    fate: OldKeyFate,
    now: u64,
) -> Result<Option<KeyRecord>, StoreError> {
    let Some(old) = key(conn, org, id)? else {
        return Ok(None);
    };
    if !old.is_active(now) {
        return Err(StoreError::Inactive);
    }
    match fate {
        OldKeyFate::RevokeAt(at) => revoke(conn, org, id, at),
        OldKeyFate::ExpireAt(at) if old.expires_at.is_none_or(|current| at < current) => {
            conn.prepare_cached("UPDATE api_keys SET expires_at = ?1 WHERE id = ?2")?
                .execute(params![at, sql_id(id.0)])?;
            add_revision(conn, id)?;
            key(conn, org, id)
        }
        OldKeyFate::ExpireAt(_) => Ok(Some(old)),
    }
}

/// The key set's id, made (with `fresh`) if the database has none yet: a
/// new database, or one made before key sets. Two processes opening it at
/// once both read the one that was inserted first.
pub fn key_set(conn: &Connection, fresh: KeySet) -> Result<KeySet, StoreError> {
    conn.prepare_cached("INSERT OR IGNORE INTO key_set (id, key_set) VALUES (1, ?1)")?
        .execute([fresh.0])?;
    let bytes: [u8; 16] = conn
        .prepare_cached("SELECT key_set FROM key_set")?
        .query_row([], |row| row.get(0))?;
    Ok(KeySet(bytes))
}

/// The current feed version and the newest compacted one.
fn feed_state(conn: &Connection) -> Result<(u64, u64), StoreError> {
    Ok(conn
        .prepare_cached("SELECT version, compacted_through FROM feed_state")?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))?)
}

pub fn version(conn: &Connection) -> Result<u64, StoreError> {
    feed_state(conn).map(|(version, _)| version)
}

/// The feed answer for `since`; run it inside one read transaction.
pub fn feed(conn: &Connection, since: u64, page: PageAsk) -> Result<FeedAnswer, StoreError> {
    let (version, compacted_through) = feed_state(conn)?;
    if since == version {
        return Ok(FeedAnswer::Unchanged(version));
    }
    if since == 0 || since > version || since < compacted_through {
        let (entries, more) = snapshot_page(conn, page)?;
        return Ok(FeedAnswer::SnapshotPage {
            version,
            entries,
            more,
        });
    }
    let sql = format!(
        "SELECT {FEED_COLUMNS} FROM api_keys WHERE id IN \
         (SELECT key_id FROM key_revisions WHERE version > ?1) ORDER BY seq"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let ops = stmt
        .query_map([since], feed_op)?
        .collect::<Result<_, _>>()?;
    Ok(FeedAnswer::Delta {
        base: since,
        version,
        ops,
    })
}

fn page_sql() -> String {
    format!(
        "SELECT {FEED_COLUMNS} FROM api_keys WHERE in_table = 1 AND key_hash > ?1 \
         ORDER BY key_hash LIMIT ?2"
    )
}

/// The keys of the table after `page.after`, in hash order, at most
/// `page.keys` of them (one more is read to know whether any follow; the
/// UNIQUE index on `key_hash` gives the range and the order).
fn snapshot_page(conn: &Connection, page: PageAsk) -> Result<(Vec<FeedEntry>, bool), StoreError> {
    let keys = page.keys.max(1);
    let sql = page_sql();
    // Every hash (32 bytes) sorts after the empty blob.
    let after: &[u8] = page.after.as_ref().map_or(&[], |h| h.as_slice());
    let limit = i64::try_from(keys.saturating_add(1)).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut entries: Vec<FeedEntry> = stmt
        .query_map(params![after, limit], feed_op)?
        .filter_map(|op| match op {
            Ok(FeedOp::Upsert(entry)) => Some(Ok(entry)),
            Ok(FeedOp::Remove(_)) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<_, _>>()?;
    let more = entries.len() > keys;
    entries.truncate(keys);
    Ok((entries, more))
}

/// Takes keys that expired at or before `cutoff` out of the table.
pub fn retire_expired(conn: &Connection, cutoff: u64) -> Result<usize, StoreError> {
    let ids: Vec<u64> = conn
        .prepare_cached(
            "UPDATE api_keys SET in_table = 0 \
             WHERE in_table = 1 AND expires_at IS NOT NULL AND expires_at <= ?1 RETURNING id",
        )?
        .query_map([cutoff], |row| id_of(row, 0))?
        .collect::<Result<_, _>>()?;
    for &id in &ids {
        add_revision(conn, KeyId(id))?;
    }
    Ok(ids.len())
}

/// Drops every revision but the last `keep`.
pub fn compact(conn: &Connection, keep: u64) -> Result<usize, StoreError> {
    let (version, compacted_through) = feed_state(conn)?;
    let through = version.saturating_sub(keep);
    if through <= compacted_through {
        return Ok(0);
    }
    conn.prepare_cached("UPDATE feed_state SET compacted_through = ?1")?
        .execute([through])?;
    Ok(conn
        .prepare_cached("DELETE FROM key_revisions WHERE version <= ?1")?
        .execute([through])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page is a range scan of the `key_hash` index, already in order: no
    /// full scan, no sort of the table.
    #[test]
    fn a_page_reads_the_key_hash_index() {
        let conn = Connection::open_in_memory().unwrap();
        super::super::migrate(&conn).unwrap();
        let sql = format!("EXPLAIN QUERY PLAN {}", page_sql());
        let mut stmt = conn.prepare(&sql).unwrap();
        let plan: Vec<String> = stmt
            .query_map(params![[0u8; 32], 3], |row| row.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let plan = plan.join("\n");
        assert!(
            plan.contains("USING INDEX") && plan.contains("(key_hash>?)"),
            "{plan}"
        );
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    }
}
