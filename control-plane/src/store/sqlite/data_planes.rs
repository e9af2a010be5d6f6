//! The data planes of the SQLite store (crate::store::data_planes): writes
//! in the writer's transaction, reads on a reader.

use super::queries::{id_of, sql_id};
use super::SqliteStore;
use crate::store::data_planes::{
    digest_of, tenants_of, tenants_to_store, DataPlane, DataPlaneStore,
};
use crate::store::StoreFuture;
use keygate::ids::{KeyId, OrgId};
use rusqlite::types::Type;
use rusqlite::{params, Row};

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn uint(row: &Row, column: usize) -> rusqlite::Result<Option<u64>> {
    let raw: Option<i64> = row.get(column)?;
    Ok(raw.map(|v| u64::try_from(v).unwrap_or(0)))
}

fn conversion(column: usize, e: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, Type::Text, e.into())
}

fn plane(row: &Row) -> rusqlite::Result<DataPlane> {
    let old: Option<Vec<u8>> = row.get(4)?;
    let old = match (old, uint(row, 5)?) {
        (Some(hash), Some(until)) => Some((digest_of(hash).map_err(|e| conversion(4, e))?, until)),
        _ => None,
    };
    Ok(DataPlane {
        id: id_of(row, 0)?,
        name: row.get(1)?,
        tenants: tenants_of(row.get(2)?).map_err(|e| conversion(2, e))?,
        token_hash: digest_of(row.get(3)?).map_err(|e| conversion(3, e))?,
        old_token: old,
        created_at: uint(row, 6)?.unwrap_or(0),
        rotated_at: uint(row, 7)?,
        revoked_at: uint(row, 8)?,
    })
}

impl DataPlaneStore for SqliteStore {
    fn data_planes(&self) -> StoreFuture<'_, Vec<DataPlane>> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT id, name, tenants, token_hash, old_token_hash, old_token_expires_at, \
                 created_at, rotated_at, revoked_at FROM data_planes ORDER BY id",
            )?;
            let planes = statement.query_map([], plane)?.collect::<Result<_, _>>()?;
            Ok(planes)
        })
    }

    fn save_data_plane(&self, plane: DataPlane) -> StoreFuture<'_, ()> {
        self.write(move |conn| {
            let (old_hash, old_until) = match plane.old_token {
                Some((hash, until)) => (Some(hash.to_vec()), Some(int(until))),
                None => (None, None),
            };
            conn.prepare_cached(
                "INSERT INTO data_planes (id, name, tenants, token_hash, old_token_hash, \
                 old_token_expires_at, created_at, rotated_at, revoked_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (id) DO UPDATE SET \
                 token_hash = excluded.token_hash, old_token_hash = excluded.old_token_hash, \
                 old_token_expires_at = excluded.old_token_expires_at, \
                 rotated_at = excluded.rotated_at, revoked_at = excluded.revoked_at",
            )?
            .execute(params![
                sql_id(plane.id),
                plane.name,
                tenants_to_store(&plane.tenants),
                plane.token_hash.as_slice(),
                old_hash,
                old_until,
                int(plane.created_at),
                plane.rotated_at.map(int),
                plane.revoked_at.map(int),
            ])?;
            Ok(())
        })
    }

    fn key_tenants(&self, keys: Vec<KeyId>) -> StoreFuture<'_, Vec<(KeyId, OrgId)>> {
        self.read(move |conn| {
            let ids: Vec<i64> = keys.iter().map(|k| sql_id(k.0)).collect();
            let ids = serde_json::Value::from(ids).to_string();
            let mut statement = conn.prepare_cached(
                "SELECT k.id, k.tenant_id FROM json_each(?1) AS j \
                 JOIN api_keys AS k ON k.id = j.value",
            )?;
            let rows = statement
                .query_map([ids], |row| {
                    Ok((KeyId(id_of(row, 0)?), OrgId(id_of(row, 1)?)))
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
    }
}
