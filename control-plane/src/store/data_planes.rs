//! Storage of the data planes (SPEC §15): each plane's name, the tenants
//! it is limited to and the SHA-256 of its feed token (and of the previous
//! one while a rotation's overlap lasts). Both backends implement
//! [`DataPlaneStore`]; every [`super::Store`] is one.

use super::StoreFuture;
use keygate::ids::{KeyId, OrgId};

/// A data plane as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPlane {
    pub id: u64,
    pub name: String,
    /// The tenants whose keys it reads (`None`: every tenant).
    pub tenants: Option<Vec<OrgId>>,
    /// SHA-256 of its token.
    pub token_hash: [u8; 32],
    /// SHA-256 of the token before the last rotation, and until when it is
    /// still taken.
    pub old_token: Option<([u8; 32], u64)>,
    pub created_at: u64,
    pub rotated_at: Option<u64>,
    pub revoked_at: Option<u64>,
}

/// The tenants column: a JSON array of tenant ids, or NULL.
pub fn tenants_to_store(tenants: &Option<Vec<OrgId>>) -> Option<String> {
    tenants.as_ref().map(|orgs| {
        let ids: Vec<String> = orgs.iter().map(ToString::to_string).collect();
        serde_json::Value::from(ids).to_string()
    })
}

/// Back from the tenants column; `None` if it is not one this code wrote.
pub fn tenants_of(column: Option<String>) -> Result<Option<Vec<OrgId>>, String> {
    let Some(text) = column else {
        return Ok(None);
    };
    let ids: Vec<String> = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    ids.iter()
        .map(|id| id.parse().map_err(|_| format!("not a tenant id: {id}")))
        .collect::<Result<Vec<OrgId>, String>>()
        .map(Some)
}

/// A 32-byte digest column.
pub fn digest_of(bytes: Vec<u8>) -> Result<[u8; 32], String> {
    bytes
        .try_into()
        .map_err(|_| "a token digest is not 32 bytes".to_string())
}

/// The data planes' rows.
pub trait DataPlaneStore {
    /// Every data plane, revoked ones too, in id order.
    fn data_planes(&self) -> StoreFuture<'_, Vec<DataPlane>>;

    /// Writes a data plane (a new one, or the new state of one).
    fn save_data_plane(&self, plane: DataPlane) -> StoreFuture<'_, ()>;

    /// The tenant of each of `keys` the database knows.
    fn key_tenants(&self, keys: Vec<KeyId>) -> StoreFuture<'_, Vec<(KeyId, OrgId)>>;
}
