//! The key store: every operation on tenants, keys and the key table feed,
//! behind one trait, on SQLite (a file) or PostgreSQL (`postgres://…`).
//!
//! Every write that changes what the filter must know appends a revision in
//! the same transaction and moves the feed version, which only ever grows.

pub mod accounts;
pub mod caps;
pub mod data_planes;
pub mod events;
pub mod leaks;
pub mod postgres;
pub mod sqlite;
pub mod throttles;
pub mod usage;
pub mod usage_fold;
pub mod usage_group;

use caps::{Caps, CapsChange, Crossing};
use keygate::feed::{FeedEntry, FeedOp, KeySet, KeyStatus};
use keygate::ids::{KeyId, OrgId};
use keygate::key::Environment;
use keygate::limits::RateLimits;
use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::watch;
use usage::{UsageBatch, UsageBucket, UsageQuery};

/// A key as stored: never the key itself, only its display prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub id: KeyId,
    pub org_id: OrgId,
    pub name: String,
    pub display_prefix: String,
    /// Space-separated scopes.
    pub scopes: String,
    pub environment: Environment,
    pub tier: String,
    /// Unix seconds.
    pub created_at: u64,
    pub expires_at: Option<u64>,
    pub revoked_at: Option<u64>,
    /// Its own rate limits ([`RateLimits::NONE`]: the tier's only).
    pub limits: RateLimits,
    /// Its owner, forwarded as `x-key-owner`.
    pub external_id: Option<String>,
    /// Its tenant is suspended (read from the tenant, never written here).
    pub tenant_suspended: bool,
    /// The caller's own JSON object (API only, never in the feed).
    pub metadata: Option<Metadata>,
    /// The latest minute (unix seconds) with allowed requests, as the
    /// usage batches told (never written by key changes).
    pub last_used_at: Option<u64>,
    /// Its spending cap and request quota, with what they used.
    pub caps: Caps,
}

/// A key's metadata: a JSON object of at most [`MAX_METADATA_BYTES`]
/// serialized, checked before it is stored.
pub type Metadata = serde_json::Map<String, serde_json::Value>;

/// Largest serialized metadata.
pub const MAX_METADATA_BYTES: usize = 1024;

impl KeyRecord {
    /// True once `now` (unix seconds) has reached the expiry.
    pub fn is_expired(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }

    /// Neither revoked nor expired at `now`.
    pub fn is_active(&self, now: u64) -> bool {
        self.revoked_at.is_none() && !self.is_expired(now)
    }

    /// The status the key table gives the key.
    pub fn status(&self) -> KeyStatus {
        key_status(self.tenant_suspended, self.caps.status())
    }

    /// True when the key table entries of `self` and `other` differ: a
    /// change between them needs a feed revision.
    pub fn feed_differs(&self, other: &KeyRecord) -> bool {
        self.scopes != other.scopes
            || self.tier != other.tier
            || self.expires_at != other.expires_at
            || self.limits != other.limits
            || self.external_id != other.external_id
            || self.status() != other.status()
    }
}

/// The status of a key in the table, from its tenant's suspension and
/// then its caps' exhaustion.
pub fn key_status(tenant_suspended: bool, exhausted: Option<KeyStatus>) -> KeyStatus {
    if tenant_suspended {
        KeyStatus::OrgSuspended
    } else {
        exhausted.unwrap_or(KeyStatus::Active)
    }
}

/// The exhaustion of a stored status code (`exhausted`, crate::store::caps).
pub fn exhausted_status(code: Option<i64>) -> Option<KeyStatus> {
    code.and_then(|c| u8::try_from(c).ok())
        .and_then(KeyStatus::from_code)
        .filter(|s| matches!(s, KeyStatus::QuotaExhausted | KeyStatus::SpendExhausted))
}

/// A stored limit (`NULL` or a positive integer) as the core's (0 = none).
pub fn stored_limit(value: Option<u64>) -> u32 {
    value.and_then(|v| u32::try_from(v).ok()).unwrap_or(0)
}

/// The core's limit (0 = none) as stored.
pub fn limit_to_store(value: u32) -> Option<u32> {
    (value > 0).then_some(value)
}

/// A checked change of a key (`PATCH`): each field `None` stays as it is.
/// A field is added here, in [`KeyPatch::apply`], and in the backends'
/// `update_key` (and [`KeyRecord::feed_differs`] if the filter knows it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPatch {
    pub name: Option<String>,
    /// Space-separated, as in [`KeyRecord::scopes`].
    pub scopes: Option<String>,
    pub tier: Option<String>,
    /// `Some(None)` clears the expiry.
    pub expires_at: Option<Option<u64>>,
    /// `Some(None)` clears the metadata.
    pub metadata: Option<Option<Metadata>>,
    /// The key's own limits ([`RateLimits::NONE`] clears them).
    pub limits: Option<RateLimits>,
    /// `Some(None)` clears the owner.
    pub external_id: Option<Option<String>>,
    /// A change of the spending cap or quota, or a reset of their counts.
    pub caps: Option<CapsChange>,
}

impl KeyPatch {
    /// `record` with the patch applied.
    pub fn apply(&self, record: &KeyRecord) -> KeyRecord {
        let mut patched = record.clone();
        if let Some(name) = &self.name {
            patched.name.clone_from(name);
        }
        if let Some(scopes) = &self.scopes {
            patched.scopes.clone_from(scopes);
        }
        if let Some(tier) = &self.tier {
            patched.tier.clone_from(tier);
        }
        if let Some(expires_at) = self.expires_at {
            patched.expires_at = expires_at;
        }
        if let Some(metadata) = &self.metadata {
            patched.metadata.clone_from(metadata);
        }
        if let Some(limits) = self.limits {
            patched.limits = limits;
        }
        if let Some(external_id) = &self.external_id {
            patched.external_id.clone_from(external_id);
        }
        if let Some(change) = &self.caps {
            patched.caps = change.apply(&record.caps);
        }
        patched
    }
}

/// A patched key and whether the change moved the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patched {
    pub record: KeyRecord,
    /// A revision was added: the answer waits for delivery.
    pub feed_changed: bool,
}

/// A key's state for list filters (`status=`), at a given time; not the
/// key table's [`KeyStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStatus {
    /// Neither revoked nor expired.
    Active,
    Revoked,
    /// Past its expiry, not revoked.
    Expired,
}

/// One page of a tenant's keys to read: filters and position. A filter is
/// added here and in [`KeyQuery::conditions`], which both backends use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyQuery {
    /// Only keys after this row sequence number (from a cursor).
    pub after: Option<u64>,
    /// Most keys in the page (at least 1).
    pub limit: usize,
    pub environment: Option<Environment>,
    pub status: Option<ListStatus>,
    /// Only the keys with this owner.
    pub external_id: Option<String>,
    /// The time `status` is judged at (unix seconds).
    pub now: u64,
}

/// A value bound to a filter's placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlValue {
    Int(i64),
    Text(String),
}

impl KeyQuery {
    /// The SQL conditions of the filters after `tenant_id = <first>`, with
    /// the values they bind; `placeholder(n)` writes the n-th (1-based).
    pub fn conditions(&self, placeholder: fn(usize) -> String) -> (String, Vec<SqlValue>) {
        let mut sql = String::new();
        let mut values = Vec::new();
        let mut bind = |template: &str, value: SqlValue| {
            values.push(value);
            let p = placeholder(values.len() + 1);
            sql.push_str(" AND ");
            sql.push_str(&template.replace('?', &p));
        };
        if let Some(after) = self.after {
            bind(
                "seq > ?",
                SqlValue::Int(i64::try_from(after).unwrap_or(i64::MAX)),
            );
        }
        if let Some(env) = self.environment {
            bind("environment = ?", SqlValue::Text(env.as_str().into()));
        }
        if let Some(owner) = &self.external_id {
            bind("external_id = ?", SqlValue::Text(owner.clone()));
        }
        let now = SqlValue::Int(i64::try_from(self.now).unwrap_or(i64::MAX));
        match self.status {
            None => {}
            Some(ListStatus::Revoked) => sql.push_str(" AND revoked_at IS NOT NULL"),
            Some(ListStatus::Active) => bind(
                "revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)",
                now,
            ),
            Some(ListStatus::Expired) => {
                bind("revoked_at IS NULL AND expires_at <= ?", now);
            }
        }
        (sql, values)
    }

    /// Rows to read: one more than the page, to know whether more follow.
    pub fn rows(&self) -> i64 {
        i64::try_from(self.limit.max(1).saturating_add(1)).unwrap_or(i64::MAX)
    }
}

/// A page of keys in creation order, and the sequence number of the last
/// when more follow (the next page starts after it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPage {
    pub keys: Vec<KeyRecord>,
    pub next_after: Option<u64>,
}

impl KeyPage {
    /// The page of `query` from `rows` (key, sequence number) read with
    /// [`KeyQuery::rows`] as the limit.
    pub fn of(query: &KeyQuery, mut rows: Vec<(KeyRecord, u64)>) -> KeyPage {
        let limit = query.limit.max(1);
        let more = rows.len() > limit;
        rows.truncate(limit);
        KeyPage {
            next_after: rows.last().map(|(_, seq)| *seq).filter(|_| more),
            keys: rows.into_iter().map(|(key, _)| key).collect(),
        }
    }
}

/// A key to insert: its record and the SHA-256 of the full key.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub record: KeyRecord,
    pub hash: [u8; 32],
}

/// An organisation.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: OrgId,
    pub name: String,
    pub email: String,
    pub created_at: u64,
    /// Its plan's name (`""`: the default plan, as migrated tenants have).
    pub plan: String,
    /// Suspended by the operator ([`Store::set_suspended`]; a new tenant
    /// never is).
    pub suspended: bool,
}

/// Which page of the tenants to read (operator API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantPage {
    /// Only tenants after this one, in id order (`None`: from the first).
    pub after: Option<OrgId>,
    /// Most tenants in the page.
    pub limit: usize,
}

/// What happens to the old key of a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldKeyFate {
    /// Revoked at this time: it leaves the key table at once.
    RevokeAt(u64),
    /// Expires at this time (or earlier, if it already did).
    ExpireAt(u64),
}

/// Which page of a snapshot to read, if the answer is a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageAsk {
    /// Only keys whose hash is strictly greater (`None`: from the first).
    pub after: Option<[u8; 32]>,
    /// Most keys in the page (at least 1).
    pub keys: usize,
}

/// What the feed answers for a `since` version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedAnswer {
    /// `since` is the current version.
    Unchanged(u64),
    /// One page of the table at `version`: the keys after the asked hash, in
    /// ascending hash order; `more` when keys follow the last of them.
    SnapshotPage {
        version: u64,
        entries: Vec<FeedEntry>,
        more: bool,
    },
    /// The changes since `base`: the current state of every key touched.
    Delta {
        base: u64,
        version: u64,
        ops: Vec<FeedOp>,
    },
}

/// What ingesting a batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// Its id was seen before: nothing counted.
    Duplicate,
    /// Counted; keys the database does not know were skipped; the caps'
    /// thresholds the batch crossed.
    Applied {
        unknown_keys: usize,
        crossings: Vec<Crossing>,
    },
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// A generated id or key hash already exists (mint a new one).
    Duplicate,
    /// The tenant does not exist.
    UnknownTenant,
    /// The key is revoked or expired.
    Inactive,
    /// The database failed.
    Backend(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Duplicate => f.write_str("duplicate id or key"),
            StoreError::UnknownTenant => f.write_str("unknown tenant"),
            StoreError::Inactive => f.write_str("key is revoked or expired"),
            StoreError::Backend(e) => write!(f, "database error: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// The future every store operation returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Durable storage of tenants, keys and the feed's revision log.
///
/// A write is acknowledged (its future resolves) only once it is durable.
pub trait Store:
    events::EventStore
    + accounts::Accounts
    + data_planes::DataPlaneStore
    + throttles::Throttles
    + leaks::LeakStore
    + Send
    + Sync
    + 'static
{
    /// Creates a tenant and its first key atomically.
    fn create_tenant(&self, tenant: Tenant, first_key: NewKey) -> StoreFuture<'_, ()>;

    /// Inserts a key of an existing tenant.
    fn create_key(&self, key: NewKey) -> StoreFuture<'_, ()>;

    /// The key with this SHA-256, whatever its state.
    fn key_by_hash(&self, hash: [u8; 32]) -> StoreFuture<'_, Option<KeyRecord>>;

    /// One tenant.
    fn tenant(&self, org: OrgId) -> StoreFuture<'_, Option<Tenant>>;

    /// A page of tenants in id order.
    fn list_tenants(&self, page: TenantPage) -> StoreFuture<'_, Vec<Tenant>>;

    /// Sets a tenant's plan; `None` if there is no such tenant.
    fn set_plan(&self, org: OrgId, plan: String) -> StoreFuture<'_, Option<Tenant>>;

    /// Every plan name some tenant has.
    fn plans_in_use(&self) -> StoreFuture<'_, Vec<String>>;

    /// One key of one tenant.
    fn key(&self, org: OrgId, id: KeyId) -> StoreFuture<'_, Option<KeyRecord>>;

    /// One page of a tenant's keys, in creation order (the row sequence,
    /// which follows commit order: a page never skips a key committed
    /// before it was read).
    fn list_page(&self, org: OrgId, query: KeyQuery) -> StoreFuture<'_, KeyPage>;

    /// Applies `patch` to an active key, atomically, with a revision if the
    /// key table entry changes; `None` if the tenant has no such key,
    /// [`StoreError::Inactive`] if it is revoked or expired at `now`.
    fn patch_key(
        &self,
        org: OrgId,
        id: KeyId,
        patch: KeyPatch,
        now: u64,
    ) -> StoreFuture<'_, Option<Patched>>;

    /// Revokes a key (idempotent); `None` if the tenant has no such key.
    fn revoke_key(&self, org: OrgId, id: KeyId, now: u64) -> StoreFuture<'_, Option<KeyRecord>>;

    /// Inserts `new` and applies `fate` to the old key, atomically, if the old
    /// key is still active at `now`. Returns the old key as updated.
    fn rotate_key(
        &self,
        org: OrgId,
        id: KeyId,
        new: NewKey,
        fate: OldKeyFate,
        now: u64,
    ) -> StoreFuture<'_, Option<KeyRecord>>;

    /// The feed answer for a filter at version `since` (0: none), read in
    /// one transaction; a snapshot answer is the page `page` asks for.
    fn feed(&self, since: u64, page: PageAsk) -> StoreFuture<'_, FeedAnswer>;

    /// Suspends (`true`) or resumes a tenant: in one transaction, flips its
    /// flag and appends a revision for every key of it in the table, so
    /// deltas carry the keys' new status. Returns how many keys changed
    /// (0 when the flag already was so), `None` for an unknown tenant.
    fn set_suspended(&self, org: OrgId, suspended: bool) -> StoreFuture<'_, Option<usize>>;

    /// Takes out of the key table every key that expired at or before
    /// `cutoff`; returns how many left.
    fn retire_expired(&self, cutoff: u64) -> StoreFuture<'_, usize>;

    /// Drops revisions older than the last `keep`; returns how many went.
    fn compact(&self, keep: u64) -> StoreFuture<'_, usize>;

    /// Counts a usage batch in one transaction, unless its id was seen
    /// (within [`usage::BATCH_RETENTION`]); moves `last_used_at`; adds
    /// the allowed requests and cost to the capped keys' counts, marks the
    /// keys it uses up exhausted (with a revision) and returns the
    /// threshold crossings.
    fn ingest_usage(&self, batch: UsageBatch) -> StoreFuture<'_, Ingested>;

    /// Starts new counts for the exhausted keys whose cap or quota period
    /// is over at `now`, with a revision for each key that comes back;
    /// returns how many did.
    fn refill_caps(&self, now: u64) -> StoreFuture<'_, usize>;

    /// The buckets with data of one tenant's usage query, in time order.
    fn usage(&self, query: UsageQuery) -> StoreFuture<'_, Vec<UsageBucket>>;

    /// Folds minute rows past their retention into hourly rows and drops
    /// hourly rows and batch ids past theirs (times against `now`); returns
    /// how many rows went.
    fn compact_usage(&self, now: u64) -> StoreFuture<'_, usize>;

    /// Re-reads the version from the database (writes by another process).
    fn refresh_version(&self) -> StoreFuture<'_, u64>;

    /// The current feed version, updated as soon as a write commits.
    fn version(&self) -> watch::Receiver<u64>;

    /// The id of this database's key set, which its versions belong to.
    fn key_set(&self) -> KeySet;
}

/// True for a `--database` that names a PostgreSQL database, not a file.
pub fn is_postgres(database: &str) -> bool {
    ["postgres://", "postgresql://"]
        .iter()
        .any(|scheme| database.starts_with(scheme))
}

/// The database for logs and errors: a URL's password replaced by `***`.
pub fn redacted(database: &str) -> String {
    if !is_postgres(database) {
        return database.to_string();
    }
    let Some((scheme, rest)) = database.split_once("://") else {
        return database.to_string();
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return database.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
        None => database.to_string(),
    }
}

/// Opens the store `database` names: a `postgres://` URL, or else a SQLite
/// file. Errors never show the URL's password.
pub async fn open(database: &Path) -> Result<Arc<dyn Store>, String> {
    let name = database.to_string_lossy();
    let shown = redacted(&name);
    let opened: Result<Arc<dyn Store>, StoreError> = if is_postgres(&name) {
        postgres::PostgresStore::open(&name)
            .await
            .map(|s| Arc::new(s) as Arc<dyn Store>)
    } else {
        sqlite::SqliteStore::open(database).map(|s| Arc::new(s) as Arc<dyn Store>)
    };
    opened.map_err(|e| format!("cannot open {shown}: {e}"))
}

/// Moves the published version forward (never back).
pub fn publish(sender: &watch::Sender<u64>, version: u64) {
    sender.send_if_modified(|current| {
        let newer = version > *current;
        if newer {
            *current = version;
        }
        newer
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_password_is_never_shown() {
        assert_eq!(
            redacted("postgres://keygate:s3cr%40t@db.internal:5432/keygate?sslmode=disable"),
            "postgres://keygate:***@db.internal:5432/keygate?sslmode=disable"
        );
        assert_eq!(redacted("postgresql://u:p@h/d"), "postgresql://u:***@h/d");
        for plain in ["postgres://u@h/d", "postgres://h/d", "data/keygate.db"] {
            assert_eq!(redacted(plain), plain);
        }
    }

    #[test]
    fn only_postgres_urls_leave_sqlite() {
        assert!(is_postgres("postgres://h/d") && is_postgres("postgresql://h/d"));
        assert!(!is_postgres("data/postgres://x") && !is_postgres("keygate.db"));
    }
}
