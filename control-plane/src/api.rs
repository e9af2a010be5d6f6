//! The management API of SPEC §6 and §10 under `/api/v1`: tenants, their
//! keys, their usage, the caller and its dashboard password (described by
//! the OpenAPI document, crate::openapi; webhooks and the audit log have
//! their own modules).

use crate::audit::{self, Note, Source, Who};
use crate::auth::{self, authenticate};
use crate::body;
use crate::clock;
use crate::drafts::{self, KeyDraft, KeyPatchDraft, TenantDraft};
use crate::errors::{json, ApiError, ErrorBody};
use crate::listing::ListDraft;
use crate::password::Password;
use crate::service::{email_taken, Service};
use crate::state::AppState;
use crate::store::accounts::PasswordSet;
use crate::store::{KeyRecord, Tenant};
use crate::usage::{UsageDraft, UsageView};
use crate::views::{
    CreatedKey, CreatedTenant, Delivered, KeyList, KeyView, Me, PasswordSetView, RotatedKey,
};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Router;
use keygate::ids::{KeyId, OrgId};
use utoipa::{IntoParams, ToSchema};

/// The management API's routes (their handlers are described by crate::openapi).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/tenants", post(create_tenant))
        .route("/api/v1/api-keys", post(create_key).get(list_keys))
        .route(
            "/api/v1/api-keys/{id}",
            get(get_key).patch(patch_key).delete(revoke_key),
        )
        .route("/api/v1/api-keys/{id}/rotate", post(rotate_key))
        .route("/api/v1/api-keys/{id}/usage", get(key_usage))
        .route("/api/v1/api-keys/{id}/usage/reset", post(reset_usage))
        .route("/api/v1/usage", get(tenant_usage))
        .route("/api/v1/auth/me", get(me))
        .route("/api/v1/auth/me/password", put(set_password))
}

type Answer = Result<Response, ApiError>;

/// The `{id}` of a key's path (for the OpenAPI document).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct KeyIdParam {
    /// A key id, `key_<16 hex>`.
    #[param(pattern = "^key_[0-9a-f]{16}$")]
    id: String,
}

/// The key id of a path: a malformed one is a 400 naming `id` (a
/// well-formed id of another tenant is a 404, as if absent).
fn key_id(path: Result<Path<String>, PathRejection>) -> Result<KeyId, ApiError> {
    let bad = || ApiError::invalid("id", "id must be a key id such as key_0123456789abcdef");
    let Path(id) = path.map_err(|_| bad())?;
    id.parse().map_err(|_| bad())
}

/// Registers a tenant; the answer holds its first key (every default scope),
/// shown once, and comes once the key is delivered to the Envoys
/// (`propagated`). Limited per client address (`--signup-per-hour`), off with
/// `--signup closed`.
#[utoipa::path(post, path = "/api/v1/tenants", tag = "tenants", request_body = TenantDraft,
    responses((status = 201, description = "The tenant and its first key", body = Delivered<CreatedTenant>),
              (status = 403, description = "Sign-up is closed", body = ErrorBody),
              (status = 409, description = "With `password`: another tenant signs in to the dashboard with this email", body = ErrorBody),
              (status = 429, description = "Too many sign-ups from this address, or password hashing busy (`retry-after`)", body = ErrorBody)))]
async fn create_tenant(
    State(state): State<AppState>,
    source: Source,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let sign_up = state.sign_in.sign_up;
    sign_up.check_open()?;
    let draft = TenantDraft::from_json(&body::bytes(body)?)?;
    let created = sign_up.register(&state.service, draft, &source).await?;
    Ok(json(StatusCode::CREATED, &created))
}

/// Mints a key (`tenant:admin`); the key is shown once. Without `scopes` it
/// holds the tenant's default key scopes. The answer comes once the key is
/// delivered to the Envoys (`propagated`), so it works at once everywhere.
#[utoipa::path(post, path = "/api/v1/api-keys", tag = "api-keys", request_body = KeyDraft,
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 201, description = "The new key", body = Delivered<CreatedKey>)))]
async fn create_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    source: Source,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let caller = authenticate(&state.service, &headers, &uri, auth::ADMIN).await?;
    let draft = KeyDraft::from_json(&body::bytes(body)?)?;
    let spec = draft.check(state.service.policy(), clock::now())?;
    let created = state.service.create_key(caller.org_id, spec).await?;
    record(&state, &caller, source, audit::creation(&created.value.key)).await;
    Ok(json(StatusCode::CREATED, &created))
}

/// A page of the tenant's keys in creation order (`tenant:read` or `tenant:admin`).
#[utoipa::path(get, path = "/api/v1/api-keys", tag = "api-keys", params(ListDraft),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "A page of keys", body = KeyList)))]
async fn list_keys(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Answer {
    let caller = authenticate(&state.service, &headers, &uri, auth::READ).await?;
    let query = ListDraft::from_query(uri.query())?.check(clock::now())?;
    let page = state.service.list(caller.org_id, query).await?;
    Ok(json(StatusCode::OK, &page))
}

/// One key of the tenant (`tenant:read` or `tenant:admin`).
#[utoipa::path(get, path = "/api/v1/api-keys/{id}", tag = "api-keys",
    params(KeyIdParam),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "The key", body = KeyView),
              (status = 404, description = "No such key in this tenant", body = ErrorBody)))]
async fn get_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    id: Result<Path<String>, PathRejection>,
) -> Answer {
    let caller = authenticate(&state.service, &headers, &uri, auth::READ).await?;
    let key = state.service.get(caller.org_id, key_id(id)?).await?;
    Ok(json(StatusCode::OK, &key))
}

/// Changes an active key (`tenant:admin`): every field is checked before
/// anything is written. A change of scopes, tier or expiry answers once
/// delivered to the Envoys (`propagated`).
#[utoipa::path(patch, path = "/api/v1/api-keys/{id}", tag = "api-keys", request_body = KeyPatchDraft,
    params(KeyIdParam),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "The key as changed", body = Delivered<KeyView>),
              (status = 404, description = "No such key in this tenant", body = ErrorBody),
              (status = 409, description = "The key is revoked or expired", body = ErrorBody)))]
async fn patch_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    source: Source,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let caller = authenticate(&state.service, &headers, &uri, auth::ADMIN).await?;
    let id = key_id(id)?;
    let draft = KeyPatchDraft::from_json(&body::bytes(body)?)?;
    let patch = draft.check(state.service.policy(), clock::now())?;
    let changes = patch.clone();
    let patched = state.service.patch(caller.org_id, id, patch).await?;
    let key = &patched.value;
    let note = Note::key(audit::KEY_UPDATE, key, audit::patched(&changes, key));
    record(&state, &caller, source, note).await;
    Ok(json(StatusCode::OK, &patched))
}

/// Revokes a key (`tenant:admin`); answers once delivered to the Envoys.
#[utoipa::path(delete, path = "/api/v1/api-keys/{id}", tag = "api-keys",
    params(KeyIdParam),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "The key as revoked", body = Delivered<KeyView>),
              (status = 404, description = "No such key in this tenant", body = ErrorBody)))]
async fn revoke_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    source: Source,
    id: Result<Path<String>, PathRejection>,
) -> Answer {
    let caller = authenticate(&state.service, &headers, &uri, auth::ADMIN).await?;
    let revoked = state.service.revoke(caller.org_id, key_id(id)?).await?;
    record(&state, &caller, source, audit::revocation(&revoked.value)).await;
    Ok(json(StatusCode::OK, &revoked))
}

/// Grace period of a rotation.
#[derive(ToSchema)]
#[allow(dead_code)]
struct RotateBody {
    /// Seconds the old key keeps working (0 to 2592000; default 0).
    #[schema(minimum = 0, maximum = 2592000)]
    grace_seconds: Option<u64>,
}

/// Replaces a key by a new one (`tenant:admin`); the old one dies now or after the grace period.
/// The answer comes once the change is delivered to the Envoys (`propagated`).
#[utoipa::path(post, path = "/api/v1/api-keys/{id}/rotate", tag = "api-keys",
    request_body(content = Option<RotateBody>),
    params(KeyIdParam),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 201, description = "The new key and the old one", body = Delivered<RotatedKey>),
              (status = 404, description = "No such key in this tenant", body = ErrorBody),
              (status = 409, description = "The key is revoked or expired", body = ErrorBody)))]
async fn rotate_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    source: Source,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let caller = authenticate(&state.service, &headers, &uri, auth::ADMIN).await?;
    let id = key_id(id)?;
    let grace = drafts::grace_seconds(&body::bytes(body)?)?;
    let rotated = state.service.rotate(caller.org_id, id, grace).await?;
    let (old, new) = (&rotated.value.previous_key, &rotated.value.created.key);
    record(&state, &caller, source, audit::rotation(old, new, grace)).await;
    Ok(json(StatusCode::CREATED, &rotated))
}

/// Records `note` in the caller's tenant's audit log, by the caller's key.
async fn record(state: &AppState, caller: &KeyRecord, source: Source, note: Note) {
    let who = Who::key(caller.id, source);
    state.service.audit(caller.org_id, &who, note).await;
}

/// Zeroes what the key's quota and spending cap used in their current
/// period (`tenant:admin`); an exhausted key comes back, delivered to the
/// Envoys before the answer.
#[utoipa::path(post, path = "/api/v1/api-keys/{id}/usage/reset", tag = "usage",
    params(KeyIdParam),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "The key with its counts reset", body = Delivered<KeyView>),
              (status = 404, description = "No such key in this tenant", body = ErrorBody),
              (status = 409, description = "The key is revoked or expired", body = ErrorBody)))]
async fn reset_usage(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    source: Source,
    id: Result<Path<String>, PathRejection>,
) -> Answer {
    let caller = authenticate(&state.service, &headers, &uri, auth::ADMIN).await?;
    let reset = state
        .service
        .reset_usage(caller.org_id, key_id(id)?)
        .await?;
    let changes =
        serde_json::json!({"quota": reset.value.quota, "spend_cap": reset.value.spend_cap});
    let note = Note::key(audit::KEY_USAGE_RESET, &reset.value, changes);
    record(&state, &caller, source, note).await;
    Ok(json(StatusCode::OK, &reset))
}

/// The usage of `query`'s keys in `org`.
async fn usage_of(state: &AppState, org: OrgId, key: Option<KeyId>, draft: UsageDraft) -> Answer {
    let query = draft.check(org, key, clock::now())?;
    let buckets = state.service.store().usage(query.clone()).await?;
    Ok(json(StatusCode::OK, &UsageView::new(&query, buckets)))
}

/// One key's requests per outcome and cost over time (`tenant:read` or `tenant:admin`).
#[utoipa::path(get, path = "/api/v1/api-keys/{id}/usage", tag = "usage",
    params(KeyIdParam, ("from" = Option<String>, Query, format = DateTime,
                        description = "Start (RFC 3339, inclusive; default: 24 hours before `to`)"),
           ("to" = Option<String>, Query, format = DateTime,
            description = "End (RFC 3339, exclusive; default: now); after `from`, at most 400 days later"),
           ("granularity" = Option<crate::usage::GranularityName>, Query,
            description = "Bucket width (default `hour`); `minute` only within the last 48 hours")),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "The buckets with data", body = UsageView),
              (status = 404, description = "No such key in this tenant", body = ErrorBody)))]
async fn key_usage(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    id: Result<Path<String>, PathRejection>,
) -> Answer {
    let caller = authenticate(&state.service, &headers, &uri, auth::READ).await?;
    let id = key_id(id)?;
    let draft = UsageDraft::from_query(uri.query(), false)?;
    state.service.get(caller.org_id, id).await?;
    usage_of(&state, caller.org_id, Some(id), draft).await
}

/// The tenant's requests per outcome and cost over time, optionally of one
/// end user's keys (`tenant:read` or `tenant:admin`).
#[utoipa::path(get, path = "/api/v1/usage", tag = "usage", params(UsageDraft),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "The buckets with data", body = UsageView)))]
async fn tenant_usage(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Answer {
    let caller = authenticate(&state.service, &headers, &uri, auth::READ).await?;
    let draft = UsageDraft::from_query(uri.query(), true)?;
    usage_of(&state, caller.org_id, None, draft).await
}

/// The calling key and its tenant (any valid key).
#[utoipa::path(get, path = "/api/v1/auth/me", tag = "auth",
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "The caller", body = Me)))]
async fn me(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Answer {
    let caller = authenticate(&state.service, &headers, &uri, auth::ANY).await?;
    let me = Me {
        tenant_id: caller.org_id,
        key: (&caller).into(),
    };
    Ok(json(StatusCode::OK, &me))
}

/// A dashboard password.
#[derive(ToSchema)]
#[allow(dead_code)]
struct PasswordBody {
    /// 10 to 256 bytes, no control characters.
    #[schema(format = Password, min_length = 10, max_length = 256)]
    password: String,
}

/// Sets or changes the tenant's dashboard password (`tenant:admin`): sign-in
/// to `/dashboard` is then by the tenant's email and this password. Ends
/// every dashboard session of the tenant.
#[utoipa::path(put, path = "/api/v1/auth/me/password", tag = "auth", request_body = PasswordBody,
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "The password is set", body = PasswordSetView),
              (status = 409, description = "Another tenant signs in with this email", body = ErrorBody),
              (status = 429, description = "Password hashing busy (`retry-after`)", body = ErrorBody)))]
async fn set_password(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let caller = authenticate(&state.service, &headers, &uri, auth::ADMIN).await?;
    let mut fields = body::Fields::parse(&body::bytes(body)?, &["password"], false)?;
    let password = body::required(fields.string("password")?, "password")?;
    let password = Password::new(password, "password")?;
    let tenant = store_password(&state.service, caller.org_id, password).await?;
    let view = PasswordSetView {
        tenant_id: tenant.id,
        email: tenant.email,
        message: "Sign in at /dashboard with this email and password.",
    };
    Ok(json(StatusCode::OK, &view))
}

/// Sets (or changes) the dashboard password of `org`, under its email;
/// ends its sessions (`PUT /api/v1/auth/me/password`).
async fn store_password(
    service: &Service,
    org: OrgId,
    password: Password,
) -> Result<Tenant, ApiError> {
    let tenant = service.store().tenant(org).await?;
    let tenant = tenant.ok_or(ApiError::NotFound("Tenant"))?;
    let hash = password.hash(service.hashing()).await?;
    let set = service
        .store()
        .set_password(org, tenant.email.clone(), hash, clock::now())
        .await?;
    match set {
        PasswordSet::Set => Ok(tenant),
        PasswordSet::EmailTaken => Err(email_taken()),
    }
}
