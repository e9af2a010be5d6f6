//! The SQL of the PostgreSQL store, one function per operation, on a
//! connection or transaction: the caller decides the transaction. Writes go
//! through [`Write`], which remembers the version its revisions reached.

use crate::store::caps::Caps;
use crate::store::{
    exhausted_status, key_status, limit_to_store, stored_limit, FeedAnswer, KeyPage, KeyPatch,
    KeyQuery, KeyRecord, Metadata, NewKey, OldKeyFate, PageAsk, Patched, SqlValue, StoreError,
    Tenant, TenantPage,
};
use deadpool_postgres::{GenericClient, Transaction};
use keygate::feed::{FeedEntry, FeedOp, KeySet};
use keygate::ids::{KeyId, OrgId};
use keygate::key::Environment;
use keygate::limits::RateLimits;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

/// The channel a write notifies, with its new version, at commit.
pub const CHANNEL: &str = "keygate_feed";

const KEY_COLUMNS: &str = "id, tenant_id, name, display_prefix, scopes, environment, tier, \
                           created_at, expires_at, revoked_at, rate_per_minute, rate_per_day, \
                           external_id, (SELECT suspended FROM tenants t WHERE t.id = tenant_id), \
                           metadata, last_used_at, caps";
/// Columns in [`KEY_COLUMNS`]: the index of a column selected after them.
const KEY_COLUMNS_LEN: usize = 17;
const TENANT_COLUMNS: &str = "id, name, email, created_at, plan, suspended";
/// What the feed reads of a key: [`FEED_COLUMNS`] from [`FEED_FROM`] (the
/// tenant joined once, not looked up per row).
const FEED_COLUMNS: &str = "k.key_hash, k.id, k.tenant_id, k.expires_at, k.scopes, k.tier, \
                            k.environment, k.in_table, k.rate_per_minute, k.rate_per_day, \
                            k.external_id, t.suspended, k.exhausted";
const FEED_FROM: &str = "api_keys k LEFT JOIN tenants t ON t.id = k.tenant_id";

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        match e.code() {
            Some(&SqlState::UNIQUE_VIOLATION) => StoreError::Duplicate,
            Some(&SqlState::FOREIGN_KEY_VIOLATION) => StoreError::UnknownTenant,
            _ => StoreError::Backend(e.to_string()),
        }
    }
}

/// An open write transaction and the version its revisions reached.
pub struct Write<'a> {
    pub tx: Transaction<'a>,
    /// The version after this transaction's last revision (0: none yet).
    pub version: u64,
}

pub(super) fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// A 64-bit id as PostgreSQL's BIGINT (same bits).
pub(super) fn sql_id(id: u64) -> i64 {
    i64::from_ne_bytes(id.to_ne_bytes())
}

/// A time or version as BIGINT.
pub(super) fn int(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| backend(format!("{value} is out of BIGINT range")))
}

pub(super) fn id_of(row: &Row, column: usize) -> Result<u64, StoreError> {
    let raw: i64 = row.try_get(column)?;
    Ok(u64::from_ne_bytes(raw.to_ne_bytes()))
}

pub(super) fn uint(row: &Row, column: usize) -> Result<u64, StoreError> {
    let raw: i64 = row.try_get(column)?;
    u64::try_from(raw).map_err(backend)
}

fn opt_uint(row: &Row, column: usize) -> Result<Option<u64>, StoreError> {
    let raw: Option<i64> = row.try_get(column)?;
    raw.map(|v| u64::try_from(v).map_err(backend)).transpose()
}

fn environment_of(row: &Row, column: usize) -> Result<Environment, StoreError> {
    let text: &str = row.try_get(column)?;
    text.parse().map_err(backend)
}

fn hash_of(row: &Row, column: usize) -> Result<[u8; 32], StoreError> {
    let bytes: &[u8] = row.try_get(column)?;
    bytes.try_into().map_err(backend)
}

/// The limits in columns `at` and `at + 1`.
fn limits_of(row: &Row, at: usize) -> Result<RateLimits, StoreError> {
    Ok(RateLimits {
        per_minute: stored_limit(opt_uint(row, at)?),
        per_day: stored_limit(opt_uint(row, at + 1)?),
    })
}

fn key_record(row: &Row) -> Result<KeyRecord, StoreError> {
    Ok(KeyRecord {
        id: KeyId(id_of(row, 0)?),
        org_id: OrgId(id_of(row, 1)?),
        name: row.try_get(2)?,
        display_prefix: row.try_get(3)?,
        scopes: row.try_get(4)?,
        environment: environment_of(row, 5)?,
        tier: row.try_get(6)?,
        created_at: uint(row, 7)?,
        expires_at: opt_uint(row, 8)?,
        revoked_at: opt_uint(row, 9)?,
        limits: limits_of(row, 10)?,
        external_id: row.try_get(12)?,
        tenant_suspended: row.try_get(13)?,
        metadata: metadata_of(row, 14)?,
        last_used_at: opt_uint(row, 15)?,
        caps: Caps::from_text(row.try_get(16)?),
    })
}

fn metadata_of(row: &Row, column: usize) -> Result<Option<Metadata>, StoreError> {
    let text: Option<&str> = row.try_get(column)?;
    text.map(serde_json::from_str).transpose().map_err(backend)
}

/// Metadata as stored: its JSON text.
fn metadata_text(metadata: Option<&Metadata>) -> Result<Option<String>, StoreError> {
    metadata
        .map(serde_json::to_string)
        .transpose()
        .map_err(backend)
}

/// A row of `FEED_COLUMNS`: the upsert to send, or the remove when the key
/// left the table.
fn feed_op(row: &Row) -> Result<FeedOp, StoreError> {
    let hash = hash_of(row, 0)?;
    let in_table: bool = row.try_get(7)?;
    if !in_table {
        return Ok(FeedOp::Remove(hash));
    }
    Ok(FeedOp::Upsert(FeedEntry {
        hash,
        key_id: KeyId(id_of(row, 1)?),
        org_id: OrgId(id_of(row, 2)?),
        expires_at: opt_uint(row, 3)?.unwrap_or(0),
        scopes: row.try_get(4)?,
        tier: row.try_get(5)?,
        environment: environment_of(row, 6)?,
        status: key_status(
            row.try_get(11)?,
            exhausted_status(row.try_get::<_, Option<i32>>(12)?.map(i64::from)),
        ),
        limits: limits_of(row, 8)?,
        external_id: row.try_get(10)?,
    }))
}

pub async fn insert_tenant(w: &Write<'_>, tenant: &Tenant) -> Result<(), StoreError> {
    let stmt =
        w.tx.prepare_cached(
            "INSERT INTO tenants (id, name, email, created_at, plan) VALUES ($1, $2, $3, $4, $5)",
        )
        .await?;
    w.tx.execute(
        &stmt,
        &[
            &sql_id(tenant.id.0),
            &tenant.name,
            &tenant.email,
            &int(tenant.created_at)?,
            &tenant.plan,
        ],
    )
    .await?;
    Ok(())
}

fn tenant_row(row: &Row) -> Result<Tenant, StoreError> {
    Ok(Tenant {
        id: OrgId(id_of(row, 0)?),
        name: row.try_get(1)?,
        email: row.try_get(2)?,
        created_at: uint(row, 3)?,
        plan: row.try_get(4)?,
        suspended: row.try_get(5)?,
    })
}

pub async fn tenant(c: &impl GenericClient, org: OrgId) -> Result<Option<Tenant>, StoreError> {
    let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1");
    let stmt = c.prepare_cached(&sql).await?;
    c.query_opt(&stmt, &[&sql_id(org.0)])
        .await?
        .as_ref()
        .map(tenant_row)
        .transpose()
}

/// A page of tenants in (signed) id order.
pub async fn list_tenants(
    c: &impl GenericClient,
    page: TenantPage,
) -> Result<Vec<Tenant>, StoreError> {
    let sql = format!(
        "SELECT {TENANT_COLUMNS} FROM tenants WHERE $1::BIGINT IS NULL OR id > $1 \
         ORDER BY id LIMIT $2"
    );
    let after = page.after.map(|org| sql_id(org.0));
    let limit = i64::try_from(page.limit).unwrap_or(i64::MAX);
    let stmt = c.prepare_cached(&sql).await?;
    c.query(&stmt, &[&after, &limit])
        .await?
        .iter()
        .map(tenant_row)
        .collect()
}

pub async fn set_plan(w: &Write<'_>, org: OrgId, plan: &str) -> Result<Option<Tenant>, StoreError> {
    let sql = format!("UPDATE tenants SET plan = $1 WHERE id = $2 RETURNING {TENANT_COLUMNS}");
    let stmt = w.tx.prepare_cached(&sql).await?;
    w.tx.query_opt(&stmt, &[&plan, &sql_id(org.0)])
        .await?
        .as_ref()
        .map(tenant_row)
        .transpose()
}

pub async fn plans_in_use(c: &impl GenericClient) -> Result<Vec<String>, StoreError> {
    let stmt = c
        .prepare_cached("SELECT DISTINCT plan FROM tenants ORDER BY plan")
        .await?;
    let rows = c.query(&stmt, &[]).await?;
    rows.iter()
        .map(|row| row.try_get(0).map_err(StoreError::from))
        .collect()
}

/// Inserts a key and its revision. The revision comes first: it takes the
/// `feed_state` row lock, so the row's `seq` is drawn in commit order and a
/// list page never skips a key committed before it was read.
pub async fn insert_key(w: &mut Write<'_>, key: &NewKey) -> Result<(), StoreError> {
    let r = &key.record;
    add_revision(w, r.id).await?;
    let stmt =
        w.tx.prepare_cached(
            "INSERT INTO api_keys (id, tenant_id, name, key_hash, display_prefix, scopes, \
             environment, tier, created_at, expires_at, revoked_at, in_table, \
             rate_per_minute, rate_per_day, external_id, metadata, caps, exhausted) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL, TRUE, $11, $12, $13, $14, \
             $15, $16)",
        )
        .await?;
    let expires_at = r.expires_at.map(int).transpose()?;
    let metadata = metadata_text(r.metadata.as_ref())?;
    w.tx.execute(
        &stmt,
        &[
            &sql_id(r.id.0),
            &sql_id(r.org_id.0),
            &r.name,
            &key.hash.as_slice(),
            &r.display_prefix,
            &r.scopes,
            &r.environment.as_str(),
            &r.tier,
            &int(r.created_at)?,
            &expires_at,
            &limit_to_store(r.limits.per_minute).map(i64::from),
            &limit_to_store(r.limits.per_day).map(i64::from),
            &r.external_id,
            &metadata,
            &r.caps.to_text(),
            &r.caps.status_code().map(i32::from),
        ],
    )
    .await?;
    Ok(())
}

/// Sets a tenant's suspension; a change appends a revision for each of
/// its keys in the table. The tenant row and then the version row are
/// locked first: a key inserted concurrently either committed before (and
/// is listed here) or takes its version after this commit (and the feed
/// reads its status then). `None` for an unknown tenant.
pub async fn set_suspended(
    w: &mut Write<'_>,
    org: OrgId,
    suspended: bool,
) -> Result<Option<usize>, StoreError> {
    let stmt =
        w.tx.prepare_cached("SELECT suspended FROM tenants WHERE id = $1 FOR UPDATE")
            .await?;
    let Some(row) = w.tx.query_opt(&stmt, &[&sql_id(org.0)]).await? else {
        return Ok(None);
    };
    if row.try_get::<_, bool>(0)? == suspended {
        return Ok(Some(0));
    }
    w.tx.execute("SELECT version FROM feed_state FOR UPDATE", &[])
        .await?;
    let stmt =
        w.tx.prepare_cached("UPDATE tenants SET suspended = $2 WHERE id = $1")
            .await?;
    w.tx.execute(&stmt, &[&sql_id(org.0), &suspended]).await?;
    let stmt = w
        .tx
        .prepare_cached("SELECT id FROM api_keys WHERE tenant_id = $1 AND in_table ORDER BY seq")
        .await?;
    let rows = w.tx.query(&stmt, &[&sql_id(org.0)]).await?;
    for row in &rows {
        add_revision(w, KeyId(id_of(row, 0)?)).await?;
    }
    Ok(Some(rows.len()))
}

/// Moves the version on (taking the `feed_state` row lock until commit),
/// records that `id` changed at it, and notifies [`CHANNEL`] at commit.
pub(super) async fn add_revision(w: &mut Write<'_>, id: KeyId) -> Result<(), StoreError> {
    let stmt =
        w.tx.prepare_cached(
            "WITH moved AS (UPDATE feed_state SET version = version + 1 RETURNING version) \
             INSERT INTO key_revisions (version, key_id) SELECT version, $1 FROM moved \
             RETURNING version, pg_notify($2, version::text)",
        )
        .await?;
    let row = w.tx.query_one(&stmt, &[&sql_id(id.0), &CHANNEL]).await?;
    w.version = uint(&row, 0)?;
    Ok(())
}

pub async fn key_by_hash(
    c: &impl GenericClient,
    hash: &[u8; 32],
) -> Result<Option<KeyRecord>, StoreError> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = $1");
    let stmt = c.prepare_cached(&sql).await?;
    c.query_opt(&stmt, &[&hash.as_slice()])
        .await?
        .as_ref()
        .map(key_record)
        .transpose()
}

pub async fn key(
    c: &impl GenericClient,
    org: OrgId,
    id: KeyId,
) -> Result<Option<KeyRecord>, StoreError> {
    select_key(c, org, id, "").await
}

/// The key, its row locked until commit (two replicas changing one key
/// take turns).
async fn locked_key(w: &Write<'_>, org: OrgId, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
    select_key(&w.tx, org, id, " FOR UPDATE").await
}

async fn select_key(
    c: &impl GenericClient,
    org: OrgId,
    id: KeyId,
    lock: &str,
) -> Result<Option<KeyRecord>, StoreError> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1 AND tenant_id = $2{lock}");
    let stmt = c.prepare_cached(&sql).await?;
    c.query_opt(&stmt, &[&sql_id(id.0), &sql_id(org.0)])
        .await?
        .as_ref()
        .map(key_record)
        .transpose()
}

/// One page of a tenant's keys in `seq` order (the `api_keys_by_tenant`
/// index gives the range and the order).
pub async fn list_page(
    c: &impl GenericClient,
    org: OrgId,
    query: &KeyQuery,
) -> Result<KeyPage, StoreError> {
    let (conditions, values) = query.conditions(|n| format!("${n}"));
    let limit = values.len() + 2;
    let sql = format!(
        "SELECT {KEY_COLUMNS}, seq FROM api_keys WHERE tenant_id = $1{conditions} \
         ORDER BY seq LIMIT ${limit}"
    );
    let mut bound: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(sql_id(org.0))];
    for value in values {
        bound.push(match value {
            SqlValue::Int(i) => Box::new(i),
            SqlValue::Text(t) => Box::new(t),
        });
    }
    bound.push(Box::new(query.rows()));
    let params: Vec<&(dyn ToSql + Sync)> =
        bound.iter().map(|b| &**b as &(dyn ToSql + Sync)).collect();
    let stmt = c.prepare_cached(&sql).await?;
    let rows = c
        .query(&stmt, &params)
        .await?
        .iter()
        .map(|row| Ok((key_record(row)?, uint(row, KEY_COLUMNS_LEN)?)))
        .collect::<Result<_, StoreError>>()?;
    Ok(KeyPage::of(query, rows))
}

/// Applies `patch` to an active key (its row locked); a change of its
/// table entry adds a revision.
pub async fn patch_key(
    w: &mut Write<'_>,
    org: OrgId,
    id: KeyId,
    patch: &KeyPatch,
    now: u64,
) -> Result<Option<Patched>, StoreError> {
    let Some(old) = locked_key(w, org, id).await? else {
        return Ok(None);
    };
    if !old.is_active(now) {
        return Err(StoreError::Inactive);
    }
    let record = patch.apply(&old);
    let stmt =
        w.tx.prepare_cached(
            "UPDATE api_keys SET name = $1, scopes = $2, tier = $3, expires_at = $4, \
             metadata = $5, rate_per_minute = $6, rate_per_day = $7, external_id = $8, \
             caps = $10, exhausted = $11 WHERE id = $9",
        )
        .await?;
    let expires_at = record.expires_at.map(int).transpose()?;
    let metadata = metadata_text(record.metadata.as_ref())?;
    w.tx.execute(
        &stmt,
        &[
            &record.name,
            &record.scopes,
            &record.tier,
            &expires_at,
            &metadata,
            &limit_to_store(record.limits.per_minute).map(i64::from),
            &limit_to_store(record.limits.per_day).map(i64::from),
            &record.external_id,
            &sql_id(id.0),
            &record.caps.to_text(),
            &record.caps.status_code().map(i32::from),
        ],
    )
    .await?;
    let feed_changed = record.feed_differs(&old);
    if feed_changed {
        add_revision(w, id).await?;
    }
    Ok(Some(Patched {
        record,
        feed_changed,
    }))
}

/// Revokes a key; a key still in the table leaves it with a revision.
pub async fn revoke(
    w: &mut Write<'_>,
    org: OrgId,
    id: KeyId,
    now: u64,
) -> Result<Option<KeyRecord>, StoreError> {
    let stmt =
        w.tx.prepare_cached(
            "SELECT in_table, revoked_at IS NOT NULL FROM api_keys \
             WHERE id = $1 AND tenant_id = $2 FOR UPDATE",
        )
        .await?;
    let Some(row) =
        w.tx.query_opt(&stmt, &[&sql_id(id.0), &sql_id(org.0)])
            .await?
    else {
        return Ok(None);
    };
    let (in_table, revoked): (bool, bool) = (row.try_get(0)?, row.try_get(1)?);
    if !revoked {
        let stmt = w
            .tx
            .prepare_cached("UPDATE api_keys SET revoked_at = $1, in_table = FALSE WHERE id = $2")
            .await?;
        w.tx.execute(&stmt, &[&int(now)?, &sql_id(id.0)]).await?;
        if in_table {
            add_revision(w, id).await?;
        }
    }
    key(&w.tx, org, id).await
}

/// Applies a rotation's `fate` to the old key, which must be active.
pub async fn retire_rotated(
    w: &mut Write<'_>,
    org: OrgId,
    id: KeyId,
    fate: OldKeyFate,
    now: u64,
) -> Result<Option<KeyRecord>, StoreError> {
    let Some(old) = locked_key(w, org, id).await? else {
        return Ok(None);
    };
    if !old.is_active(now) {
        return Err(StoreError::Inactive);
    }
    match fate {
        OldKeyFate::RevokeAt(at) => revoke(w, org, id, at).await,
        OldKeyFate::ExpireAt(at) if old.expires_at.is_none_or(|current| at < current) => {
            let stmt =
                w.tx.prepare_cached("UPDATE api_keys SET expires_at = $1 WHERE id = $2")
                    .await?;
            w.tx.execute(&stmt, &[&int(at)?, &sql_id(id.0)]).await?;
            add_revision(w, id).await?;
            key(&w.tx, org, id).await
        }
        OldKeyFate::ExpireAt(_) => Ok(Some(old)),
    }
}

/// The key set's id, inserted (with `fresh`) if there is none yet: run it in
/// the transaction that creates the schema.
pub async fn key_set(c: &impl GenericClient, fresh: KeySet) -> Result<KeySet, StoreError> {
    c.execute(
        "INSERT INTO key_set (id, key_set) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
        &[&fresh.0.as_slice()],
    )
    .await?;
    let row = c.query_one("SELECT key_set FROM key_set", &[]).await?;
    let bytes: &[u8] = row.try_get(0)?;
    bytes.try_into().map(KeySet).map_err(backend)
}

/// The current feed version and the newest compacted one (`lock`: with the
/// row locked until commit).
async fn feed_state(c: &impl GenericClient, lock: bool) -> Result<(u64, u64), StoreError> {
    let sql = if lock {
        "SELECT version, compacted_through FROM feed_state FOR UPDATE"
    } else {
        "SELECT version, compacted_through FROM feed_state"
    };
    let stmt = c.prepare_cached(sql).await?;
    let row = c.query_one(&stmt, &[]).await?;
    Ok((uint(&row, 0)?, uint(&row, 1)?))
}

pub async fn version(c: &impl GenericClient) -> Result<u64, StoreError> {
    feed_state(c, false).await.map(|(version, _)| version)
}

/// The feed answer for `since`; run it in one repeatable-read transaction.
pub async fn feed(
    c: &impl GenericClient,
    since: u64,
    page: PageAsk,
) -> Result<FeedAnswer, StoreError> {
    let (version, compacted_through) = feed_state(c, false).await?;
    if since == version {
        return Ok(FeedAnswer::Unchanged(version));
    }
    if since == 0 || since > version || since < compacted_through {
        let (entries, more) = snapshot_page(c, page).await?;
        return Ok(FeedAnswer::SnapshotPage {
            version,
            entries,
            more,
        });
    }
    let sql = format!(
        "SELECT {FEED_COLUMNS} FROM {FEED_FROM} WHERE k.id IN \
         (SELECT key_id FROM key_revisions WHERE version > $1) ORDER BY k.seq"
    );
    let stmt = c.prepare_cached(&sql).await?;
    let ops = c
        .query(&stmt, &[&int(since)?])
        .await?
        .iter()
        .map(feed_op)
        .collect::<Result<_, _>>()?;
    Ok(FeedAnswer::Delta {
        base: since,
        version,
        ops,
    })
}

/// The keys of the table after `page.after`, in hash order, at most
/// `page.keys` of them (one more is read to know whether any follow; the
/// UNIQUE index on `key_hash` gives the range and the order).
async fn snapshot_page(
    c: &impl GenericClient,
    page: PageAsk,
) -> Result<(Vec<FeedEntry>, bool), StoreError> {
    let keys = page.keys.max(1);
    let sql = format!(
        "SELECT {FEED_COLUMNS} FROM {FEED_FROM} WHERE k.in_table AND k.key_hash > $1 \
         ORDER BY k.key_hash LIMIT $2"
    );
    // Every hash (32 bytes) sorts after the empty string.
    let after: &[u8] = page.after.as_ref().map_or(&[], |h| h.as_slice());
    let limit = i64::try_from(keys.saturating_add(1)).unwrap_or(i64::MAX);
    let stmt = c.prepare_cached(&sql).await?;
    let mut entries = Vec::new();
    for row in c.query(&stmt, &[&after, &limit]).await? {
        if let FeedOp::Upsert(entry) = feed_op(&row)? {
            entries.push(entry);
        }
    }
    let more = entries.len() > keys;
    entries.truncate(keys);
    Ok((entries, more))
}

/// Takes keys that expired at or before `cutoff` out of the table.
pub async fn retire_expired(w: &mut Write<'_>, cutoff: u64) -> Result<usize, StoreError> {
    let stmt =
        w.tx.prepare_cached(
            "UPDATE api_keys SET in_table = FALSE \
             WHERE in_table AND expires_at IS NOT NULL AND expires_at <= $1 RETURNING id",
        )
        .await?;
    let rows = w.tx.query(&stmt, &[&int(cutoff)?]).await?;
    for row in &rows {
        add_revision(w, KeyId(id_of(row, 0)?)).await?;
    }
    Ok(rows.len())
}

/// Drops every revision but the last `keep` (the `feed_state` row locked:
/// replicas compacting at once take turns, the mark never moves back).
pub async fn compact(w: &Write<'_>, keep: u64) -> Result<usize, StoreError> {
    let (version, compacted_through) = feed_state(&w.tx, true).await?;
    let through = version.saturating_sub(keep);
    if through <= compacted_through {
        return Ok(0);
    }
    let through = int(through)?;
    let stmt =
        w.tx.prepare_cached("UPDATE feed_state SET compacted_through = $1")
            .await?;
    w.tx.execute(&stmt, &[&through]).await?;
    let stmt =
        w.tx.prepare_cached("DELETE FROM key_revisions WHERE version <= $1")
            .await?;
    let dropped = w.tx.execute(&stmt, &[&through]).await?;
    usize::try_from(dropped).map_err(backend)
}
