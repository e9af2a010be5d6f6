//! The data planes of the PostgreSQL store (crate::store::data_planes):
//! writes in one transaction each, reads on a pooled connection.

use super::queries::{backend, id_of, int, sql_id};
use super::{connection, PostgresStore};
use crate::store::data_planes::{
    digest_of, tenants_of, tenants_to_store, DataPlane, DataPlaneStore,
};
use crate::store::{StoreError, StoreFuture};
use keygate::ids::{KeyId, OrgId};
use tokio_postgres::Row;

fn uint(row: &Row, column: usize) -> Result<Option<u64>, StoreError> {
    let raw: Option<i64> = row.try_get(column)?;
    raw.map(|v| u64::try_from(v).map_err(backend)).transpose()
}

fn plane(row: &Row) -> Result<DataPlane, StoreError> {
    let old: Option<Vec<u8>> = row.try_get(4)?;
    let old = match (old, uint(row, 5)?) {
        (Some(hash), Some(until)) => Some((digest_of(hash).map_err(backend)?, until)),
        _ => None,
    };
    Ok(DataPlane {
        id: id_of(row, 0)?,
        name: row.try_get(1)?,
        tenants: tenants_of(row.try_get(2)?).map_err(backend)?,
        token_hash: digest_of(row.try_get(3)?).map_err(backend)?,
        old_token: old,
        created_at: uint(row, 6)?.unwrap_or(0),
        rotated_at: uint(row, 7)?,
        revoked_at: uint(row, 8)?,
    })
}

fn optional(value: Option<u64>) -> Result<Option<i64>, StoreError> {
    value.map(int).transpose()
}

impl DataPlaneStore for PostgresStore {
    fn data_planes(&self) -> StoreFuture<'_, Vec<DataPlane>> {
        Box::pin(async move {
            let client = connection(&self.inner.pool).await?;
            let rows = client
                .query(
                    "SELECT id, name, tenants, token_hash, old_token_hash, old_token_expires_at, \
                     created_at, rotated_at, revoked_at FROM data_planes ORDER BY id",
                    &[],
                )
                .await?;
            rows.iter().map(plane).collect()
        })
    }

    fn save_data_plane(&self, plane: DataPlane) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |w| {
            Box::pin(async move {
                let (old_hash, old_until) = match plane.old_token {
                    Some((hash, until)) => (Some(hash.to_vec()), Some(int(until)?)),
                    None => (None, None),
                };
                w.tx.execute(
                    "INSERT INTO data_planes (id, name, tenants, token_hash, old_token_hash, \
                     old_token_expires_at, created_at, rotated_at, revoked_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO UPDATE SET \
                     token_hash = excluded.token_hash, old_token_hash = excluded.old_token_hash, \
                     old_token_expires_at = excluded.old_token_expires_at, \
                     rotated_at = excluded.rotated_at, revoked_at = excluded.revoked_at",
                    &[
                        &sql_id(plane.id),
                        &plane.name,
                        &tenants_to_store(&plane.tenants),
                        &plane.token_hash.as_slice(),
                        &old_hash,
                        &old_until,
                        &int(plane.created_at)?,
                        &optional(plane.rotated_at)?,
                        &optional(plane.revoked_at)?,
                    ],
                )
                .await?;
                Ok(())
            })
        }))
    }

    fn key_tenants(&self, keys: Vec<KeyId>) -> StoreFuture<'_, Vec<(KeyId, OrgId)>> {
        Box::pin(async move {
            let ids: Vec<i64> = keys.iter().map(|k| sql_id(k.0)).collect();
            let client = connection(&self.inner.pool).await?;
            let rows = client
                .query(
                    "SELECT id, tenant_id FROM api_keys WHERE id = ANY($1)",
                    &[&ids],
                )
                .await?;
            rows.iter()
                .map(|row| Ok((KeyId(id_of(row, 0)?), OrgId(id_of(row, 1)?))))
                .collect()
        })
    }
}
