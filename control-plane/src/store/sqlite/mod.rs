//! The embedded SQLite store: one file in WAL mode with `synchronous = FULL`,
//! created with its schema (and its key set's id) on first open.
//!
//! Writes go through the group-committing [`writer`]; reads use a small pool
//! of connections on blocking threads, so reading a large table (page by
//! page) never holds up writes.

mod accounts;
mod caps;
mod data_planes;
mod events;
mod leaks;
mod queries;
mod throttles;
mod usage;
mod writer;

use super::usage::{UsageBatch, UsageBucket, UsageQuery};
use super::usage_group::Groups;
use super::{
    FeedAnswer, Ingested, KeyPage, KeyPatch, KeyQuery, KeyRecord, NewKey, OldKeyFate, PageAsk,
    Patched, Store, StoreError, StoreFuture, Tenant, TenantPage,
};
use keygate::feed::KeySet;
use keygate::ids::{KeyId, OrgId};
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use writer::Writer;

/// The migrations, in order; `PRAGMA user_version` holds the number of the
/// last one applied. Each runs in the transaction that records it.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        include_str!("../../../migrations/sqlite/0001_schema.sql"),
    ),
    (
        2,
        include_str!("../../../migrations/sqlite/0002_limits.sql"),
    ),
    (3, include_str!("../../../migrations/sqlite/0003_plans.sql")),
    (
        4,
        include_str!("../../../migrations/sqlite/0004_key_metadata.sql"),
    ),
    (5, include_str!("../../../migrations/sqlite/0005_usage.sql")),
    (6, include_str!("../../../migrations/sqlite/0006_caps.sql")),
    (
        7,
        include_str!("../../../migrations/sqlite/0007_events.sql"),
    ),
    (
        8,
        include_str!("../../../migrations/sqlite/0008_dashboard.sql"),
    ),
    (
        10,
        include_str!("../../../migrations/sqlite/0010_throttles.sql"),
    ),
    (
        11,
        include_str!("../../../migrations/sqlite/0011_data_planes.sql"),
    ),
    (
        15,
        include_str!("../../../migrations/sqlite/0015_leaks.sql"),
    ),
];
/// Read connections kept open between reads.
const IDLE_READERS: usize = 8;
/// How long a statement waits for another process's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A store in one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    readers: Mutex<Vec<Connection>>,
    writer: Writer,
    version: watch::Sender<u64>,
    key_set: KeySet,
    /// Usage batches waiting to be written together.
    usage: Groups,
}

fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
    Ok(conn)
}

/// Applies the migrations the database lacks, each in the write transaction
/// that records it (so two processes opening one file apply each once).
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    for (number, sql) in MIGRATIONS {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let applied: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
        let step = if applied < *number {
            conn.execute_batch(&format!("{sql}; PRAGMA user_version = {number};"))
        } else {
            Ok(())
        };
        match step.and_then(|()| conn.execute_batch("COMMIT")) {
            Ok(()) if applied < *number => tracing::info!(migration = number, "database migrated"),
            Ok(()) => {}
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e.into());
            }
        }
    }
    Ok(())
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and its schema.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| backend(format!("cannot create {}: {e}", dir.display())))?;
        }
        let conn = connect(path)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(backend(format!("journal_mode is {mode}, not WAL")));
        }
        migrate(&conn)?;
        let fresh = KeySet::random().map_err(backend)?;
        let key_set = queries::key_set(&conn, fresh)?;
        let (version, _) = watch::channel(queries::version(&conn)?);
        let writer = Writer::start(conn, version.clone()).map_err(backend)?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                readers: Mutex::new(Vec::new()),
                writer,
                version,
                key_set,
                usage: Groups::default(),
            }),
        })
    }

    fn write<T, F>(&self, work: F) -> StoreFuture<'_, T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        Box::pin(self.inner.writer.write(work))
    }

    fn read<T, F>(&self, work: F) -> StoreFuture<'static, T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut conn = inner.take_reader()?;
                let result = work(&mut conn);
                inner.give_back(conn);
                result
            })
            .await
            .map_err(backend)?
        })
    }
}

impl Inner {
    fn take_reader(&self) -> Result<Connection, StoreError> {
        let idle = self
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        idle.map_or_else(|| connect(&self.path), Ok)
    }

    fn give_back(&self, conn: Connection) {
        let mut readers = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        if readers.len() < IDLE_READERS {
            readers.push(conn);
        }
    }
}

impl Store for SqliteStore {
    fn create_tenant(&self, tenant: Tenant, first_key: NewKey) -> StoreFuture<'_, ()> {
        self.write(move |conn| {
            queries::insert_tenant(conn, &tenant)?;
            queries::insert_key(conn, &first_key)
        })
    }

    fn create_key(&self, key: NewKey) -> StoreFuture<'_, ()> {
        self.write(move |conn| queries::insert_key(conn, &key))
    }

    fn key_by_hash(&self, hash: [u8; 32]) -> StoreFuture<'_, Option<KeyRecord>> {
        self.read(move |conn| queries::key_by_hash(conn, &hash))
    }

    fn tenant(&self, org: OrgId) -> StoreFuture<'_, Option<Tenant>> {
        self.read(move |conn| queries::tenant(conn, org))
    }

    fn list_tenants(&self, page: TenantPage) -> StoreFuture<'_, Vec<Tenant>> {
        self.read(move |conn| queries::list_tenants(conn, page))
    }

    fn set_plan(&self, org: OrgId, plan: String) -> StoreFuture<'_, Option<Tenant>> {
        self.write(move |conn| queries::set_plan(conn, org, &plan))
    }

    fn plans_in_use(&self) -> StoreFuture<'_, Vec<String>> {
        self.read(|conn| queries::plans_in_use(conn))
    }

    fn key(&self, org: OrgId, id: KeyId) -> StoreFuture<'_, Option<KeyRecord>> {
        self.read(move |conn| queries::key(conn, org, id))
    }

    fn list_page(&self, org: OrgId, query: KeyQuery) -> StoreFuture<'_, KeyPage> {
        self.read(move |conn| queries::list_page(conn, org, &query))
    }

    fn patch_key(
        &self,
        org: OrgId,
        id: KeyId,
        patch: KeyPatch,
        now: u64,
    ) -> StoreFuture<'_, Option<Patched>> {
        self.write(move |conn| queries::patch_key(conn, org, id, &patch, now))
    }

    fn revoke_key(&self, org: OrgId, id: KeyId, now: u64) -> StoreFuture<'_, Option<KeyRecord>> {
        self.write(move |conn| queries::revoke(conn, org, id, now))
    }

    fn rotate_key(
        &self,
        org: OrgId,
        id: KeyId,
        new: NewKey,
        fate: OldKeyFate,
        now: u64,
    ) -> StoreFuture<'_, Option<KeyRecord>> {
        self.write(move |conn| {
            let Some(old) = queries::retire_rotated(conn, org, id, fate, now)? else {
                return Ok(None);
            };
            queries::insert_key(conn, &new)?;
            Ok(Some(old))
        })
    }

    fn feed(&self, since: u64, page: PageAsk) -> StoreFuture<'_, FeedAnswer> {
        self.read(move |conn| {
            let tx = conn.transaction()?;
            let answer = queries::feed(&tx, since, page)?;
            tx.commit()?;
            Ok(answer)
        })
    }

    fn set_suspended(&self, org: OrgId, suspended: bool) -> StoreFuture<'_, Option<usize>> {
        self.write(move |conn| queries::set_suspended(conn, org, suspended))
    }

    fn retire_expired(&self, cutoff: u64) -> StoreFuture<'_, usize> {
        self.write(move |conn| queries::retire_expired(conn, cutoff))
    }

    fn compact(&self, keep: u64) -> StoreFuture<'_, usize> {
        self.write(move |conn| queries::compact(conn, keep))
    }

    fn ingest_usage(&self, batch: UsageBatch) -> StoreFuture<'_, Ingested> {
        let store = self.clone();
        Box::pin(self.inner.usage.ingest(batch, move |batches| {
            Box::pin(async move { store.write(move |conn| usage::ingest(conn, &batches)).await })
        }))
    }

    fn refill_caps(&self, now: u64) -> StoreFuture<'_, usize> {
        self.write(move |conn| caps::refill(conn, now))
    }

    fn usage(&self, query: UsageQuery) -> StoreFuture<'_, Vec<UsageBucket>> {
        self.read(move |conn| usage::query(conn, &query))
    }

    fn compact_usage(&self, now: u64) -> StoreFuture<'_, usize> {
        self.write(move |conn| usage::compact(conn, now))
    }

    fn refresh_version(&self) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let version = self.read(|conn| queries::version(conn)).await?;
            super::publish(&self.inner.version, version);
            Ok(version)
        })
    }

    fn version(&self) -> watch::Receiver<u64> {
        self.inner.version.subscribe()
    }

    fn key_set(&self) -> KeySet {
        self.inner.key_set
    }
}
