//! The PostgreSQL store: the same tables and semantics as SQLite's, on a
//! pool of connections, for several control-plane replicas on one database.
//!
//! The schema comes from the SQL files in `control-plane/migrations/postgres`,
//! applied in order at start under an advisory lock (replicas starting at
//! once take turns); the key set's id is made in the transaction that
//! creates the schema. Every write is one transaction: its revisions move
//! the one `feed_state` version row, so versions follow commit order and
//! every replica serves the same history. A write notifies the other
//! replicas at commit ([`listen`]).

mod accounts;
mod caps;
mod data_planes;
mod events;
mod leaks;
mod listen;
mod queries;
mod throttles;
mod usage;

use super::usage::{UsageBatch, UsageBucket, UsageQuery};
use super::usage_group::Groups;
use super::{
    publish, FeedAnswer, Ingested, KeyPage, KeyPatch, KeyQuery, KeyRecord, NewKey, OldKeyFate,
    PageAsk, Patched, Store, StoreError, StoreFuture, Tenant, TenantPage,
};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use keygate::feed::KeySet;
use keygate::ids::{KeyId, OrgId};
use queries::Write;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_postgres::{Config, IsolationLevel, NoTls};

/// The migrations, in order: (number, SQL).
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        include_str!("../../../migrations/postgres/0001_schema.sql"),
    ),
    (
        2,
        include_str!("../../../migrations/postgres/0002_limits.sql"),
    ),
    (
        3,
        include_str!("../../../migrations/postgres/0003_plans.sql"),
    ),
    (
        4,
        include_str!("../../../migrations/postgres/0004_key_metadata.sql"),
    ),
    (
        5,
        include_str!("../../../migrations/postgres/0005_usage.sql"),
    ),
    (
        6,
        include_str!("../../../migrations/postgres/0006_caps.sql"),
    ),
    (
        7,
        include_str!("../../../migrations/postgres/0007_events.sql"),
    ),
    (
        8,
        include_str!("../../../migrations/postgres/0008_dashboard.sql"),
    ),
    (
        9,
        include_str!("../../../migrations/postgres/0009_usage_fillfactor.sql"),
    ),
    (
        10,
        include_str!("../../../migrations/postgres/0010_throttles.sql"),
    ),
    (
        11,
        include_str!("../../../migrations/postgres/0011_data_planes.sql"),
    ),
    (
        15,
        include_str!("../../../migrations/postgres/0015_leaks.sql"),
    ),
];
/// Most connections of one replica.
const POOL_SIZE: usize = 16;
/// The advisory lock that serialises migrations (any fixed number).
const MIGRATION_LOCK: i64 = 0x6b65_7967_6174_6501;

/// A store in one PostgreSQL database.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    version: watch::Sender<u64>,
    key_set: KeySet,
    /// Usage batches waiting to be written together.
    usage: Groups,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://…`), applies the
    /// migrations it lacks, and follows the other replicas' writes.
    pub async fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let config: Config = url.parse().map_err(backend)?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .build()
            .map_err(backend)?;
        let key_set = migrate(&mut connection(&pool).await?).await?;
        let (version, _) = watch::channel(queries::version(&connection(&pool).await?).await?);
        let store = PostgresStore {
            inner: Arc::new(Inner {
                pool,
                version,
                key_set,
                usage: Groups::default(),
            }),
        };
        listen::spawn(config, store.clone());
        Ok(store)
    }

    /// Runs `work` in one write transaction; once it committed, publishes the
    /// version it reached (before the caller is answered).
    async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        F: for<'a, 'b> FnOnce(&'a mut Write<'b>) -> StoreFuture<'a, T>,
    {
        let mut client = connection(&self.inner.pool).await?;
        let mut w = Write {
            tx: client.transaction().await?,
            version: 0,
        };
        let result = work(&mut w).await?;
        let version = w.version;
        w.tx.commit().await?;
        publish(&self.inner.version, version);
        Ok(result)
    }

    /// Re-reads the committed version and publishes it.
    async fn recheck(&self) -> Result<u64, StoreError> {
        let client = connection(&self.inner.pool).await?;
        let version = queries::version(&client).await?;
        publish(&self.inner.version, version);
        Ok(version)
    }
}

async fn connection(pool: &Pool) -> Result<Object, StoreError> {
    pool.get().await.map_err(backend)
}

/// Applies the migrations the database lacks, and makes the key set's id
/// with the schema; returns the id.
async fn migrate(client: &mut Object) -> Result<KeySet, StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "SET LOCAL client_min_messages = warning; \
         CREATE TABLE IF NOT EXISTS keygate_migrations (\
         number INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await?;
    for (number, sql) in MIGRATIONS {
        let applied = tx
            .query_opt(
                "SELECT 1 FROM keygate_migrations WHERE number = $1",
                &[number],
            )
            .await?;
        if applied.is_none() {
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO keygate_migrations (number) VALUES ($1)",
                &[number],
            )
            .await?;
            tracing::info!(migration = number, "database migrated");
        }
    }
    let key_set = queries::key_set(&tx, KeySet::random().map_err(backend)?).await?;
    tx.commit().await?;
    Ok(key_set)
}

impl Store for PostgresStore {
    fn create_tenant(&self, tenant: Tenant, first_key: NewKey) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |w| {
            Box::pin(async move {
                queries::insert_tenant(w, &tenant).await?;
                queries::insert_key(w, &first_key).await
            })
        }))
    }

    fn create_key(&self, key: NewKey) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |w| Box::pin(async move { queries::insert_key(w, &key).await })))
    }

    fn key_by_hash(&self, hash: [u8; 32]) -> StoreFuture<'_, Option<KeyRecord>> {
        Box::pin(async move {
            let client = connection(&self.inner.pool).await?;
            queries::key_by_hash(&client, &hash).await
        })
    }

    fn tenant(&self, org: OrgId) -> StoreFuture<'_, Option<Tenant>> {
        Box::pin(async move {
            let client = connection(&self.inner.pool).await?;
            queries::tenant(&client, org).await
        })
    }

    fn list_tenants(&self, page: TenantPage) -> StoreFuture<'_, Vec<Tenant>> {
        Box::pin(async move {
            let client = connection(&self.inner.pool).await?;
            queries::list_tenants(&client, page).await
        })
    }

    fn set_plan(&self, org: OrgId, plan: String) -> StoreFuture<'_, Option<Tenant>> {
        Box::pin(
            self.write(move |w| Box::pin(async move { queries::set_plan(w, org, &plan).await })),
        )
    }

    fn plans_in_use(&self) -> StoreFuture<'_, Vec<String>> {
        Box::pin(async move {
            let client = connection(&self.inner.pool).await?;
            queries::plans_in_use(&client).await
        })
    }

    fn key(&self, org: OrgId, id: KeyId) -> StoreFuture<'_, Option<KeyRecord>> {
        Box::pin(async move {
            let client = connection(&self.inner.pool).await?;
            queries::key(&client, org, id).await
        })
    }

    fn list_page(&self, org: OrgId, query: KeyQuery) -> StoreFuture<'_, KeyPage> {
        Box::pin(async move {
            let client = connection(&self.inner.pool).await?;
            queries::list_page(&client, org, &query).await
        })
    }

    fn patch_key(
        &self,
        org: OrgId,
        id: KeyId,
        patch: KeyPatch,
        now: u64,
    ) -> StoreFuture<'_, Option<Patched>> {
        Box::pin(self.write(move |w| {
            Box::pin(async move { queries::patch_key(w, org, id, &patch, now).await })
        }))
    }

    fn revoke_key(&self, org: OrgId, id: KeyId, now: u64) -> StoreFuture<'_, Option<KeyRecord>> {
        Box::pin(self.write(move |w| Box::pin(queries::revoke(w, org, id, now))))
    }

    fn rotate_key(
        &self,
        org: OrgId,
        id: KeyId,
        new: NewKey,
        fate: OldKeyFate,
        now: u64,
    ) -> StoreFuture<'_, Option<KeyRecord>> {
        Box::pin(self.write(move |w| {
            Box::pin(async move {
                let Some(old) = queries::retire_rotated(w, org, id, fate, now).await? else {
                    return Ok(None);
                };
                queries::insert_key(w, &new).await?;
                Ok(Some(old))
            })
        }))
    }

    fn feed(&self, since: u64, page: PageAsk) -> StoreFuture<'_, FeedAnswer> {
        Box::pin(async move {
            let mut client = connection(&self.inner.pool).await?;
            let tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let answer = queries::feed(&tx, since, page).await?;
            tx.commit().await?;
            Ok(answer)
        })
    }

    fn set_suspended(&self, org: OrgId, suspended: bool) -> StoreFuture<'_, Option<usize>> {
        Box::pin(self.write(move |w| Box::pin(queries::set_suspended(w, org, suspended))))
    }

    fn retire_expired(&self, cutoff: u64) -> StoreFuture<'_, usize> {
        Box::pin(self.write(move |w| Box::pin(queries::retire_expired(w, cutoff))))
    }

    fn compact(&self, keep: u64) -> StoreFuture<'_, usize> {
        Box::pin(self.write(move |w| Box::pin(async move { queries::compact(w, keep).await })))
    }

    fn ingest_usage(&self, batch: UsageBatch) -> StoreFuture<'_, Ingested> {
        let store = self.clone();
        Box::pin(self.inner.usage.ingest(batch, move |batches| {
            Box::pin(async move {
                store
                    .write(move |w| Box::pin(async move { usage::ingest(w, &batches).await }))
                    .await
            })
        }))
    }

    fn refill_caps(&self, now: u64) -> StoreFuture<'_, usize> {
        Box::pin(self.write(move |w| Box::pin(async move { caps::refill(w, now).await })))
    }

    fn usage(&self, query: UsageQuery) -> StoreFuture<'_, Vec<UsageBucket>> {
        Box::pin(async move {
            let client = connection(&self.inner.pool).await?;
            usage::query(&client, &query).await
        })
    }

    fn compact_usage(&self, now: u64) -> StoreFuture<'_, usize> {
        Box::pin(self.write(move |w| Box::pin(async move { usage::compact(w, now).await })))
    }

    fn refresh_version(&self) -> StoreFuture<'_, u64> {
        Box::pin(self.recheck())
    }

    fn version(&self) -> watch::Receiver<u64> {
        self.inner.version.subscribe()
    }

    fn key_set(&self) -> KeySet {
        self.inner.key_set
    }
}
