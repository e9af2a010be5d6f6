//! The webhook API of SPEC §11: `POST/GET /api/v1/webhooks`,
//! `DELETE /api/v1/webhooks/{id}` and `GET /api/v1/webhooks/{id}/deliveries`,
//! each within the caller's tenant. The signing secret is in the create
//! answer only; no list, log or audit entry ever holds it.

use crate::audit::{self, Note, Source, Who};
use crate::auth::{self, authenticate};
use crate::body::{self, Fields};
use crate::clock;
use crate::errors::{json, ApiError, ErrorBody};
use crate::events::{self, EVENT_TYPES};
use crate::listing;
use crate::service::Service;
use crate::state::AppState;
use crate::store::events::{Delivery, Webhook};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{delete, get};
use axum::Router;
use keygate::ids::OrgId;
use serde::Serialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

/// Longest webhook URL.
const MAX_URL: usize = 2048;
/// Most webhooks of one tenant.
const MAX_WEBHOOKS: usize = 20;
/// What the creator is told about the secret.
const SHOW_SECRET_ONCE: &str = "Store this signing secret now; it will not be shown again.";

type Answer = Result<Response, ApiError>;

/// The webhook routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/webhooks", get(list).post(create))
        .route("/api/v1/webhooks/{id}", delete(remove))
        .route("/api/v1/webhooks/{id}/deliveries", get(deliveries))
}

/// A webhook to create.
#[derive(ToSchema)]
#[schema(as = CreateWebhook)]
#[allow(dead_code)]
struct WebhookDraft {
    /// Where deliveries are POSTed (`http` or `https`): a host that is, or
    /// resolves to, a public address (or one the operator allowed), no
    /// user name or password.
    #[schema(max_length = 2048, pattern = "^https?://")]
    url: String,
    /// The event types it receives (at least one).
    #[schema(min_items = 1)]
    events: Vec<EventName>,
}

/// A webhook event type (a schema only, never built).
#[derive(ToSchema)]
#[allow(dead_code)]
enum EventName {
    #[schema(rename = "key.quota.threshold")]
    QuotaThreshold,
    #[schema(rename = "key.revoked")]
    KeyRevoked,
    #[schema(rename = "key.expiring")]
    KeyExpiring,
    #[schema(rename = "key.leaked")]
    KeyLeaked,
    #[schema(rename = "key.usage.spike")]
    KeyUsageSpike,
}

/// A webhook as listed: never its secret.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Webhook)]
pub struct WebhookView {
    #[schema(example = "wh_00c0ffee00c0ffee")]
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<&Webhook> for WebhookView {
    fn from(hook: &Webhook) -> WebhookView {
        WebhookView {
            id: hook.id.clone(),
            url: hook.url.clone(),
            events: hook.events.clone(),
            created_at: clock::rfc3339(hook.created_at),
        }
    }
}

/// A new webhook and its signing secret, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: WebhookView,
    /// Signs every delivery (`keygate-signature`, docs/webhooks.md).
    pub secret: String,
    pub message: &'static str,
}

/// A tenant's webhooks.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    pub data: Vec<WebhookView>,
}

/// One delivery of an event to a webhook.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    /// `pending` (queued or retrying), `delivered` or `failed` (retried for 24 h).
    pub status: String,
    pub attempts: u64,
    /// The HTTP status of the last attempt, if the receiver answered.
    pub last_response_code: Option<u16>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When a pending delivery is tried next.
    #[schema(format = DateTime)]
    pub next_attempt_at: Option<String>,
    /// When it was delivered or given up.
    #[schema(format = DateTime)]
    pub finished_at: Option<String>,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> DeliveryView {
        let pending = d.status == crate::store::events::DeliveryStatus::Pending;
        DeliveryView {
            id: d.id,
            event_id: d.event_id,
            event_type: d.event_type,
            status: d.status.as_str().into(),
            attempts: d.attempts,
            last_response_code: d.last_status,
            last_error: d.last_error,
            created_at: clock::rfc3339(d.created_at),
            next_attempt_at: d.next_attempt_at.filter(|_| pending).map(clock::rfc3339),
            finished_at: d.finished_at.map(clock::rfc3339),
        }
    }
}

/// A webhook's latest deliveries, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    pub data: Vec<DeliveryView>,
}

/// The `{id}` of a webhook's path (for the OpenAPI document).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct WebhookIdParam {
    /// A webhook id, `wh_<16 hex>`.
    #[param(pattern = "^wh_[0-9a-f]{16}$")]
    id: String,
}

/// The webhook id of a path; a malformed one is as unknown as a missing one.
pub fn webhook_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = path.map_err(|_| ApiError::NotFound("Webhook"))?;
    let well_formed = id.strip_prefix("wh_").is_some_and(|hex| {
        hex.len() == 16 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    });
    well_formed
        .then_some(id)
        .ok_or(ApiError::NotFound("Webhook"))
}

/// The checked `url` and `events` of a create body.
fn checked(bytes: &[u8]) -> Result<(reqwest::Url, Vec<String>), ApiError> {
    let mut fields = Fields::parse(bytes, &["url", "events"], false)?;
    let url = body::required(fields.string("url")?, "url")?;
    let usable = reqwest::Url::parse(&url).ok().filter(|u| {
        matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
    });
    let url = match usable {
        Some(parsed) if url.len() <= MAX_URL => parsed,
        _ => {
            return Err(ApiError::invalid(
                "url",
                format!("url must be an http or https URL of at most {MAX_URL} characters"),
            ))
        }
    };
    let mut events = body::required(fields.strings("events")?, "events")?;
    if let Some(bad) = events.iter().find(|e| !EVENT_TYPES.contains(&e.as_str())) {
        return Err(ApiError::invalid(
            "events",
            format!(
                "unknown event type {bad:?}; known: {}",
                EVENT_TYPES.join(", ")
            ),
        ));
    }
    events.sort();
    events.dedup();
    if events.is_empty() {
        return Err(ApiError::invalid(
            "events",
            "events must name at least one event type",
        ));
    }
    Ok((url, events))
}

/// Registers a webhook (`tenant:admin`); the answer holds its signing secret, shown once.
#[utoipa::path(post, path = "/api/v1/webhooks", tag = "webhooks", request_body = WebhookDraft,
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 201, description = "The webhook and its secret", body = CreatedWebhook),
              (status = 409, description = "The tenant has the most webhooks it may have", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    source: Source,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let caller = authenticate(&state.service, &headers, &uri, auth::ADMIN).await?;
    let who = Who::key(caller.id, source);
    let created = register(&state.service, caller.org_id, &who, &body::bytes(body)?).await?;
    Ok(json(StatusCode::CREATED, &created))
}

/// Registers the webhook a create body asks for in `org`, by `who` (the
/// API and the dashboard); the answer holds the secret, shown once.
pub async fn register(
    service: &Service,
    org: OrgId,
    who: &Who,
    bytes: &[u8],
) -> Result<CreatedWebhook, ApiError> {
    let (url, events) = checked(bytes)?;
    service
        .egress()
        .check_url(&url)
        .await
        .map_err(|refused| ApiError::invalid("url", refused.to_string()))?;
    let store = service.store();
    if store.webhooks(org).await?.len() >= MAX_WEBHOOKS {
        return Err(ApiError::Conflict(format!(
            "The tenant has the most webhooks it may have ({MAX_WEBHOOKS})"
        )));
    }
    let hook = Webhook {
        id: events::random_id("wh_", 8)?,
        org,
        url: url.into(),
        events,
        secret: events::new_secret()?,
        created_at: clock::now(),
    };
    store.create_webhook(hook.clone()).await?;
    let view = WebhookView::from(&hook);
    tracing::info!(org_id = %org, webhook = %view.id, "webhook created");
    let changes = json!({"url": view.url, "events": view.events});
    let note = Note::webhook(audit::WEBHOOK_CREATE, &view.id, changes);
    service.audit(org, who, note).await;
    Ok(CreatedWebhook {
        webhook: view,
        secret: hook.secret,
        message: SHOW_SECRET_ONCE,
    })
}

/// The tenant's webhooks, without their secrets (`tenant:read` or `tenant:admin`).
#[utoipa::path(get, path = "/api/v1/webhooks", tag = "webhooks",
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "The webhooks", body = WebhookList)))]
pub async fn list(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Answer {
    let caller = authenticate(&state.service, &headers, &uri, auth::READ).await?;
    body::query_params(uri.query(), &[])?;
    let hooks = state.service.store().webhooks(caller.org_id).await?;
    let data = hooks.iter().map(WebhookView::from).collect();
    Ok(json(StatusCode::OK, &WebhookList { data }))
}

/// Deletes a webhook and its queued deliveries (`tenant:admin`).
#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "webhooks", params(WebhookIdParam),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Deleted", body = WebhookDeleted),
              (status = 404, description = "No such webhook in this tenant", body = ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    source: Source,
    id: Result<Path<String>, PathRejection>,
) -> Answer {
    let caller = authenticate(&state.service, &headers, &uri, auth::ADMIN).await?;
    let id = webhook_id(id)?;
    let who = Who::key(caller.id, source);
    unregister(&state.service, caller.org_id, &who, id.clone()).await?;
    Ok(json(StatusCode::OK, &WebhookDeleted { id, deleted: true }))
}

/// Deletes webhook `id` of `org` and its queued deliveries, by `who`.
pub async fn unregister(
    service: &Service,
    org: OrgId,
    who: &Who,
    id: String,
) -> Result<(), ApiError> {
    if !service.store().delete_webhook(org, id.clone()).await? {
        return Err(ApiError::NotFound("Webhook"));
    }
    tracing::info!(org_id = %org, webhook = %id, "webhook deleted");
    let note = Note::webhook(audit::WEBHOOK_DELETE, &id, json!({}));
    service.audit(org, who, note).await;
    Ok(())
}

/// The answer to a deletion.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDeleted {
    pub id: String,
    pub deleted: bool,
}

/// A webhook's latest deliveries, newest first (`tenant:read` or `tenant:admin`).
#[utoipa::path(get, path = "/api/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(WebhookIdParam,
           ("limit" = Option<u32>, Query, minimum = 1, maximum = 100,
            description = "Deliveries in the answer, 1 to 100 (default 50)")),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "The deliveries", body = DeliveryList),
              (status = 404, description = "No such webhook in this tenant", body = ErrorBody)))]
pub async fn deliveries(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    id: Result<Path<String>, PathRejection>,
) -> Answer {
    let caller = authenticate(&state.service, &headers, &uri, auth::READ).await?;
    let mut params = body::query_params(uri.query(), &["limit"])?;
    let limit = params
        .remove("limit")
        .as_deref()
        .map_or(Ok(listing::DEFAULT_LIMIT), listing::limit)?;
    let id = webhook_id(id)?;
    let found = state
        .service
        .store()
        .deliveries(caller.org_id, id, limit)
        .await?;
    let data = found
        .ok_or(ApiError::NotFound("Webhook"))?
        .into_iter()
        .map(DeliveryView::from)
        .collect();
    Ok(json(StatusCode::OK, &DeliveryList { data }))
}
