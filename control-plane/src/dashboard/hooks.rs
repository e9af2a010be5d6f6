//! The dashboard's webhooks page: list, add and delete the tenant's webhooks
//! (through crate::webhooks, as the API does).

use super::pages;
use super::{html, redirect, signed_form, signed_in, Form, Page, Signed, WEBHOOKS};
use crate::audit::{Source, Who};
use crate::events::EVENT_TYPES;
use crate::state::AppState;
use crate::webhooks::{self, WebhookView};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::json;

/// The webhooks page, with `error` from a refused addition.
async fn webhooks_list(
    state: &AppState,
    signed: &Signed,
    error: Option<(StatusCode, String)>,
) -> Page {
    let hooks = state.service.store().webhooks(signed.org()).await?;
    let views: Vec<WebhookView> = hooks.iter().map(WebhookView::from).collect();
    let (status, message) = error.map_or((StatusCode::OK, None), |(s, m)| (s, Some(m)));
    let page = pages::webhooks(&signed.nav(), &views, EVENT_TYPES, message.as_deref());
    Ok(html(status, page))
}

pub(super) async fn webhooks_page(State(state): State<AppState>, headers: HeaderMap) -> Page {
    let signed = signed_in(&state, &headers).await?;
    webhooks_list(&state, &signed, None).await
}

pub(super) async fn add_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    source: Source,
    body: Result<Bytes, BytesRejection>,
) -> Page {
    let form = Form::parse(body)?;
    let signed = signed_form(&state, &headers, &form).await?;
    let draft = json!({"url": form.get("url").trim(), "events": form.all("events")});
    let who = Who::dashboard(&signed.tenant.email, source);
    let bytes = draft.to_string();
    match webhooks::register(&state.service, signed.org(), &who, bytes.as_bytes()).await {
        Ok(created) => Ok(html(
            StatusCode::CREATED,
            pages::webhook_created(&signed.nav(), &created),
        )),
        Err(e) => webhooks_list(&state, &signed, Some((e.status(), e.text()))).await,
    }
}

pub(super) async fn delete_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    source: Source,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Page {
    let form = Form::parse(body)?;
    let signed = signed_form(&state, &headers, &form).await?;
    let id = webhooks::webhook_id(id)?;
    let who = Who::dashboard(&signed.tenant.email, source);
    webhooks::unregister(&state.service, signed.org(), &who, id).await?;
    Ok(redirect(WEBHOOKS))
}
