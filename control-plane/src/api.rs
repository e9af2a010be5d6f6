//! The HTTP surface: the management API of SPEC §6 under `/api/v1`, the
//! operator API (crate::operator), the key table feed, `/healthz`, `/metrics`, and JSON for every other answer (404,
//! 405).

use crate::auth::{self, authenticate};
use crate::body::{self, MAX_BODY};
use crate::clock;
use crate::drafts::{self, KeyDraft, TenantDraft};
use crate::errors::{self, json, ApiError};
use crate::feed::{self, FeedEndpoint};
use crate::metrics::{self, Propagation};
use crate::operator::{self, OperatorToken};
use crate::service::Service;
use crate::views::Me;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, FromRef, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Router;
use keygate::errors::ErrorFormat;
use keygate::ids::KeyId;
use std::sync::Arc;
use std::time::Instant;

/// What every handler shares; a handler extracts the part it needs.
#[derive(Clone)]
pub struct AppState {
    pub service: Arc<Service>,
    pub feed: Arc<FeedEndpoint>,
    pub operator: Arc<OperatorToken>,
    /// The dialect of every JSON error (`--error-format`).
    pub error_format: ErrorFormat,
}

impl FromRef<AppState> for Arc<Service> {
    fn from_ref(state: &AppState) -> Arc<Service> {
        Arc::clone(&state.service)
    }
}

impl FromRef<AppState> for Arc<FeedEndpoint> {
    fn from_ref(state: &AppState) -> Arc<FeedEndpoint> {
        Arc::clone(&state.feed)
    }
}

/// Every route of the control plane.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/tenants", post(create_tenant))
        .route("/api/v1/api-keys", post(create_key).get(list_keys))
        .route("/api/v1/api-keys/{id}", delete(revoke_key))
        .route("/api/v1/api-keys/{id}/rotate", post(rotate_key))
        .route("/api/v1/auth/me", get(me))
        .route(feed::PATH, get(feed::key_table))
        .route(metrics::PATH, get(metrics))
        .merge(operator::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(
            state.error_format,
            errors::in_dialect,
        ))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

type Answer = Result<Response, ApiError>;

/// Logs every request: method, path (never the query, which may hold a
/// key), status and duration.
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let start = Instant::now();
    let response = next.run(request).await;
    tracing::info!(%method, %path, status = response.status().as_u16(),
                   ms = start.elapsed().as_millis() as u64, "request");
    response
}

async fn healthz() -> Response {
    json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
}

/// `GET /metrics` (crate::metrics).
async fn metrics(State(state): State<AppState>) -> Response {
    let version = *state.service.store().version().borrow();
    let delivery = state.service.delivery();
    let propagation = Propagation {
        envoys: delivery.connected(),
        timeouts: delivery.timeouts(),
    };
    metrics::response(&state.feed.metrics, version, propagation)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("Route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The key id of a path; a malformed one is as unknown as a foreign one.
fn key_id(path: Result<Path<String>, PathRejection>) -> Result<KeyId, ApiError> {
    let Path(id) = path.map_err(|_| ApiError::NotFound("API key"))?;
    id.parse().map_err(|_| ApiError::NotFound("API key"))
}

async fn create_tenant(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let spec = TenantDraft::from_json(&body::bytes(body)?)?.check()?;
    let created = state.service.create_tenant(spec).await?;
    Ok(json(StatusCode::CREATED, &created))
}

async fn create_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let caller = authenticate(&state.service, &headers, &uri, auth::ADMIN).await?;
    let draft = KeyDraft::from_json(&body::bytes(body)?)?;
    let spec = draft.check(state.service.policy(), clock::now())?;
    let created = state.service.create_key(caller.org_id, spec).await?;
    Ok(json(StatusCode::CREATED, &created))
}

async fn list_keys(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Answer {
    let caller = authenticate(&state.service, &headers, &uri, auth::READ).await?;
    Ok(json(
        StatusCode::OK,
        &state.service.list(caller.org_id).await?,
    ))
}

async fn revoke_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    id: Result<Path<String>, PathRejection>,
) -> Answer {
    let caller = authenticate(&state.service, &headers, &uri, auth::ADMIN).await?;
    let revoked = state.service.revoke(caller.org_id, key_id(id)?).await?;
    Ok(json(StatusCode::OK, &revoked))
}

async fn rotate_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let caller = authenticate(&state.service, &headers, &uri, auth::ADMIN).await?;
    let id = key_id(id)?;
    let grace = drafts::grace_seconds(&body::bytes(body)?)?;
    let rotated = state.service.rotate(caller.org_id, id, grace).await?;
    Ok(json(StatusCode::CREATED, &rotated))
}

async fn me(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Answer {
    let caller = authenticate(&state.service, &headers, &uri, auth::ANY).await?;
    let me = Me {
        tenant_id: caller.org_id,
        key: (&caller).into(),
    };
    Ok(json(StatusCode::OK, &me))
}
