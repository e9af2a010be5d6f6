//! `GET/PATCH /api/v1/tenant/settings` (SPEC §17): the tenant's own
//! settings, today its `leak_policy` (what a secret scanning report of one
//! of its live keys does: `revoke`, the default, or `notify`). Reading
//! takes `tenant:read`, changing `tenant:admin` (audited).

use crate::audit::{self, Note, Source, Who};
use crate::auth::{self, authenticate};
use crate::body::{self, Fields};
use crate::errors::{json, ApiError, ErrorBody};
use crate::state::AppState;
use crate::store::leaks::LeakPolicy;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use serde_json::json as value;
use utoipa::ToSchema;

/// The route.
pub const PATH: &str = "/api/v1/tenant/settings";

/// The routes.
pub fn routes() -> Router<AppState> {
    Router::new().route(PATH, get(read).patch(change))
}

/// A tenant's settings.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = TenantSettings)]
pub struct SettingsView {
    /// What a secret scanning report of a live key does.
    #[schema(pattern = "^(revoke|notify)$")]
    leak_policy: &'static str,
}

/// A change of the settings (each field optional).
#[derive(ToSchema)]
#[schema(as = PatchTenantSettings)]
#[allow(dead_code)]
struct SettingsDraft {
    /// `revoke` (a reported live key is revoked) or `notify` (it is left;
    /// the audit log and a `key.leaked` event tell).
    #[schema(pattern = "^(revoke|notify)$", nullable = false)]
    leak_policy: Option<String>,
}

fn view(policy: LeakPolicy) -> Response {
    json(
        StatusCode::OK,
        &SettingsView {
            leak_policy: policy.as_str(),
        },
    )
}

/// The tenant's settings (`tenant:read` or `tenant:admin`).
#[utoipa::path(get, path = "/api/v1/tenant/settings", tag = "tenants",
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "The settings", body = SettingsView)))]
async fn read(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state.service, &headers, &uri, auth::READ).await?;
    let policy = state.service.store().leak_policy(caller.org_id).await?;
    Ok(view(policy.ok_or(ApiError::NotFound("Tenant"))?))
}

/// Changes the tenant's settings (`tenant:admin`); 400 naming the field
/// for a value it does not take.
#[utoipa::path(patch, path = "/api/v1/tenant/settings", tag = "tenants",
    request_body = SettingsDraft,
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "The settings as changed", body = SettingsView),
              (status = 400, description = "Bad input: `error.field` names the field", body = ErrorBody)))]
async fn change(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    source: Source,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state.service, &headers, &uri, auth::ADMIN).await?;
    let mut fields = Fields::parse(&body::bytes(body)?, &["leak_policy"], false)?;
    fields.refuse_null(&["leak_policy"])?;
    let store = state.service.store();
    let Some(name) = fields.string("leak_policy")? else {
        let policy = store.leak_policy(caller.org_id).await?;
        return Ok(view(policy.ok_or(ApiError::NotFound("Tenant"))?));
    };
    let policy = LeakPolicy::named(&name)
        .ok_or_else(|| ApiError::invalid("leak_policy", "leak_policy must be revoke or notify"))?;
    if !store.set_leak_policy(caller.org_id, policy).await? {
        return Err(ApiError::NotFound("Tenant"));
    }
    let note = Note::tenant(
        audit::SETTINGS_CHANGE,
        value!({"leak_policy": policy.as_str()}),
    );
    let who = Who::key(caller.id, source);
    state.service.audit(caller.org_id, &who, note).await;
    Ok(view(policy))
}
