//! Every route of the control plane in one router: each module's own routes
//! (the management API, its OpenAPI document, webhooks, the audit log, the
//! operator API, the dashboard), the key table feed and usage ingestion,
//! `/healthz` and `/metrics`; JSON for every other answer (404, 405), in the
//! configured dialect, and a log line per request.

use crate::api;
use crate::audit;
use crate::body::MAX_BODY;
use crate::dashboard;
use crate::errors::{self, json, ApiError};
use crate::feed;
use crate::ingest;
use crate::leaks;
use crate::metrics::{self, Propagation};
use crate::openapi;
use crate::operator;
use crate::state::AppState;
use crate::webhooks;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use std::time::Instant;

/// The control plane's router over `state`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route(feed::PATH, get(feed::key_table))
        .route(
            ingest::PATH,
            post(ingest::usage).layer(DefaultBodyLimit::max(ingest::MAX_BODY)),
        )
        .route(metrics::PATH, get(metrics))
        .merge(api::routes())
        .merge(openapi::routes())
        .merge(operator::routes())
        .merge(webhooks::routes())
        .merge(audit::routes())
        .merge(leaks::routes())
        .merge(dashboard::routes())
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

/// Logs every request: method, path (never the query, which may hold a
/// key), status and duration. A feed answer (200 or 304) logs at debug:
/// 10,000 Envoys long-polling would write 10,000 lines per change, a fifth
/// of the control plane's CPU in the 10k fan-out bench.
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let start = Instant::now();
    let response = next.run(request).await;
    let status = response.status();
    let ms = start.elapsed().as_millis() as u64;
    let routine = path == feed::PATH && (status.is_success() || status == StatusCode::NOT_MODIFIED);
    if routine {
        tracing::debug!(%method, %path, status = status.as_u16(), ms, "request");
    } else {
        tracing::info!(%method, %path, status = status.as_u16(), ms, "request");
    }
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
    let hashes = state.service.hashing().done();
    metrics::response(&state.feed.metrics, version, propagation, hashes)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("Route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
