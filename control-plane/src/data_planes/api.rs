//! The operator routes of the data planes (SPEC §15), under
//! `/operator/v1/data-planes`, behind the operator token: register a plane
//! (its token shown once), list and read them (never a token), rotate a
//! token (the old one kept for an overlap) and revoke a plane. Every change
//! is in the registry at once (crate::data_planes) and recorded in the
//! audit log of each tenant the plane is limited to.

use super::TOKEN_PREFIX;
use crate::audit::{self, Note, Source, Who};
use crate::body::{self, Fields};
use crate::clock;
use crate::errors::{json, ApiError};
use crate::events::random_id;
use crate::state::AppState;
use crate::store::data_planes::DataPlane;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use keygate::ids::OrgId;
use serde::Serialize;
use serde_json::json;

/// Longest name.
const MAX_NAME: usize = 100;
/// Most tenants a plane may be limited to.
const MAX_TENANTS: usize = 1000;
/// Longest overlap of a rotation (7 days).
const MAX_OVERLAP: u64 = 7 * 24 * 3600;

/// The data-plane routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/operator/v1/data-planes", get(list).post(create))
        .route("/operator/v1/data-planes/{id}", get(one).delete(revoke))
        .route("/operator/v1/data-planes/{id}/rotate", post(rotate))
}

type Answer = Result<Response, ApiError>;

/// A data plane as the API shows it: never a token.
#[derive(Debug, Clone, Serialize)]
struct PlaneView {
    id: String,
    name: String,
    /// The tenants whose keys it reads (`null`: every tenant).
    tenants: Option<Vec<String>>,
    status: &'static str,
    created_at: String,
    rotated_at: Option<String>,
    /// Until when the token before the last rotation is still taken.
    previous_token_expires_at: Option<String>,
    revoked_at: Option<String>,
}

/// A plane with its new token, shown once.
#[derive(Debug, Clone, Serialize)]
struct WithToken {
    #[serde(flatten)]
    plane: PlaneView,
    token: String,
}

fn plane_id(id: u64) -> String {
    format!("dp_{id:016x}")
}

fn view(plane: &DataPlane) -> PlaneView {
    let now = clock::now();
    PlaneView {
        id: plane_id(plane.id),
        name: plane.name.clone(),
        tenants: plane
            .tenants
            .as_ref()
            .map(|t| t.iter().map(ToString::to_string).collect()),
        status: if plane.revoked_at.is_some() {
            "revoked"
        } else {
            "active"
        },
        created_at: clock::rfc3339(plane.created_at),
        rotated_at: plane.rotated_at.map(clock::rfc3339),
        previous_token_expires_at: plane
            .old_token
            .filter(|(_, until)| *until > now && plane.revoked_at.is_none())
            .map(|(_, until)| clock::rfc3339(until)),
        revoked_at: plane.revoked_at.map(clock::rfc3339),
    }
}

/// A fresh token and its digest.
fn new_token() -> Result<(String, [u8; 32]), ApiError> {
    let token = random_id(TOKEN_PREFIX, 32)?;
    let digest = keygate::key::hash(&token);
    Ok((token, digest))
}

/// The plane of a path; a malformed id is as unknown as a missing one.
async fn find(
    state: &AppState,
    path: Result<Path<String>, PathRejection>,
) -> Result<DataPlane, ApiError> {
    let missing = || ApiError::NotFound("Data plane");
    let Path(id) = path.map_err(|_| missing())?;
    let hex = id
        .strip_prefix("dp_")
        .filter(|h| h.len() == 16)
        .ok_or_else(missing)?;
    let id = u64::from_str_radix(hex, 16).map_err(|_| missing())?;
    let planes = state.service.store().data_planes().await?;
    planes.into_iter().find(|p| p.id == id).ok_or_else(missing)
}

/// Writes `plane`, takes it into the registry at once and records `action`
/// in the audit log of each tenant it is limited to.
async fn save(
    state: &AppState,
    plane: &DataPlane,
    who: &Who,
    action: &'static str,
    changes: serde_json::Value,
) -> Result<(), ApiError> {
    let service = &state.service;
    service.store().save_data_plane(plane.clone()).await?;
    state.feed.planes().reload(service.store()).await?;
    tracing::info!(data_plane = %plane_id(plane.id), action, "data plane changed");
    let mut changes = changes;
    if let Some(object) = changes.as_object_mut() {
        object.insert("data_plane".into(), json!(plane_id(plane.id)));
        object.insert("name".into(), json!(plane.name));
    }
    for org in plane.tenants.iter().flatten() {
        service
            .audit(*org, who, Note::tenant(action, changes.clone()))
            .await;
    }
    Ok(())
}

/// The `tenants` of a create body: known tenant ids, at least one.
async fn tenants(state: &AppState, fields: &mut Fields) -> Result<Option<Vec<OrgId>>, ApiError> {
    let Some(ids) = fields.strings("tenants")? else {
        return Ok(None);
    };
    if ids.is_empty() || ids.len() > MAX_TENANTS {
        return Err(ApiError::invalid(
            "tenants",
            format!(
                "tenants must list 1 to {MAX_TENANTS} tenant ids (leave it out for every tenant)"
            ),
        ));
    }
    let mut orgs: Vec<OrgId> = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        let field = format!("tenants[{i}]");
        let unknown = || ApiError::invalid(&field, format!("{field} is not a tenant id"));
        let org: OrgId = id.parse().map_err(|_| unknown())?;
        if state.service.store().tenant(org).await?.is_none() {
            return Err(unknown());
        }
        orgs.push(org);
    }
    orgs.sort_unstable();
    orgs.dedup();
    Ok(Some(orgs))
}

/// `POST /operator/v1/data-planes` `{"name", "tenants"?}`: 201 with the
/// token, shown once.
async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    source: Source,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    state.operator.check(&headers)?;
    let mut fields = Fields::parse(&body::bytes(body)?, &["name", "tenants"], false)?;
    let name = body::required(fields.string("name")?, "name")?;
    if name.trim().is_empty() || name.chars().count() > MAX_NAME {
        return Err(ApiError::invalid(
            "name",
            format!("name must be 1 to {MAX_NAME} characters"),
        ));
    }
    let tenants = tenants(&state, &mut fields).await?;
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).map_err(|_| ApiError::Internal)?;
    let (token, token_hash) = new_token()?;
    let plane = DataPlane {
        id: u64::from_le_bytes(id),
        name,
        tenants,
        token_hash,
        old_token: None,
        created_at: clock::now(),
        rotated_at: None,
        revoked_at: None,
    };
    let who = Who::operator(source);
    save(&state, &plane, &who, audit::DATA_PLANE_CREATE, json!({})).await?;
    let answer = WithToken {
        plane: view(&plane),
        token,
    };
    Ok(json(StatusCode::CREATED, &answer))
}

/// `GET /operator/v1/data-planes`: every plane, revoked ones too.
async fn list(State(state): State<AppState>, headers: HeaderMap) -> Answer {
    state.operator.check(&headers)?;
    let planes = state.service.store().data_planes().await?;
    let data: Vec<PlaneView> = planes.iter().map(view).collect();
    Ok(json(StatusCode::OK, &json!({ "data": data })))
}

/// `GET /operator/v1/data-planes/{id}`.
async fn one(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Answer {
    state.operator.check(&headers)?;
    let plane = find(&state, id).await?;
    Ok(json(StatusCode::OK, &view(&plane)))
}

/// `POST /operator/v1/data-planes/{id}/rotate` `{"overlap_seconds"?}`: 201
/// with the new token; the old one is taken for the overlap (default 0:
/// refused at once).
async fn rotate(
    State(state): State<AppState>,
    headers: HeaderMap,
    source: Source,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    state.operator.check(&headers)?;
    let mut fields = Fields::parse(&body::bytes(body)?, &["overlap_seconds"], true)?;
    let overlap = fields.integer("overlap_seconds")?.unwrap_or(0);
    if overlap > MAX_OVERLAP {
        return Err(ApiError::invalid(
            "overlap_seconds",
            format!("overlap_seconds must be at most {MAX_OVERLAP}"),
        ));
    }
    let mut plane = find(&state, id).await?;
    if plane.revoked_at.is_some() {
        return Err(ApiError::Conflict("The data plane is revoked".into()));
    }
    let now = clock::now();
    let (token, token_hash) = new_token()?;
    plane.old_token = (overlap > 0).then_some((plane.token_hash, now + overlap));
    plane.token_hash = token_hash;
    plane.rotated_at = Some(now);
    let who = Who::operator(source);
    let changes = json!({ "overlap_seconds": overlap });
    save(&state, &plane, &who, audit::DATA_PLANE_ROTATE, changes).await?;
    let answer = WithToken {
        plane: view(&plane),
        token,
    };
    Ok(json(StatusCode::CREATED, &answer))
}

/// `DELETE /operator/v1/data-planes/{id}`: its tokens are refused from the
/// answer on, its held feed requests answered 401.
async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    source: Source,
    id: Result<Path<String>, PathRejection>,
) -> Answer {
    state.operator.check(&headers)?;
    let mut plane = find(&state, id).await?;
    if plane.revoked_at.is_none() {
        plane.revoked_at = Some(clock::now());
        let who = Who::operator(source);
        save(&state, &plane, &who, audit::DATA_PLANE_REVOKE, json!({})).await?;
    }
    Ok(json(StatusCode::OK, &view(&plane)))
}
