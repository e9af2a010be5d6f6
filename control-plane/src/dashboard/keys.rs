//! The dashboard's key pages: the list with each key's last day of usage,
//! the create form, one key with its usage chart, revoke and rotate.

use super::chart::{self, Point};
use super::pages::{self, Choices, KeyForm};
use super::{html, redirect, signed_form, signed_in, Form, Page, Refusal, Signed, KEYS};
use crate::audit::{self, Source};
use crate::clock;
use crate::drafts::{self, KeyDraft};
use crate::errors::ApiError;
use crate::listing::ListDraft;
use crate::service::Service;
use crate::state::AppState;
use crate::store::usage::{Granularity, UsageQuery, UsageScope};
use crate::views::KeyView;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use keygate::ids::{KeyId, OrgId};
use keygate::key::Environment;
use serde_json::{json, Map, Value};

/// A key's usage from `from` for `span` seconds in buckets of `granularity`.
async fn usage_points(
    service: &Service,
    org: OrgId,
    key: KeyId,
    span: u64,
    granularity: Granularity,
) -> Result<Vec<Point>, ApiError> {
    let step = granularity.seconds();
    let to = (clock::now() / step + 1) * step;
    let from = to.saturating_sub(span);
    let query = UsageQuery {
        org,
        scope: UsageScope::Key(key),
        from,
        to,
        granularity,
    };
    let buckets = service.store().usage(query).await?;
    Ok(chart::series(&buckets, from, to, step))
}

pub(super) async fn keys(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Page {
    let signed = signed_in(&state, &headers).await?;
    let now = clock::now();
    let query = ListDraft::from_query(uri.query())?.check(now)?;
    let list = state.service.list(signed.org(), query).await?;
    let mut rows = Vec::with_capacity(list.data.len());
    for key in list.data {
        let points = usage_points(
            &state.service,
            signed.org(),
            key.id,
            86_400,
            Granularity::Hour,
        )
        .await?;
        rows.push((key, points));
    }
    let page = pages::keys(
        &signed.nav(),
        &rows,
        &clock::rfc3339(now),
        list.next_cursor.as_deref(),
    );
    Ok(html(StatusCode::OK, page))
}

/// What the create form offers the tenant.
async fn new_key_form(
    state: &AppState,
    signed: &Signed,
    form: &KeyForm,
    error: Option<(StatusCode, String)>,
) -> Page {
    let policy = state.service.policy();
    let plan = state.service.plan_of(signed.org()).await?;
    let environments: Vec<&'static str> = [Environment::Live, Environment::Test]
        .into_iter()
        .filter(|e| policy.key_format.allows(*e))
        .map(Environment::as_str)
        .collect();
    let choices = Choices {
        scopes: &policy.scopes,
        environments: &environments,
        tiers: &plan.tiers,
        default_tier: policy.default_tier(),
    };
    let (status, message) = match &error {
        Some((status, message)) => (*status, Some(message.as_str())),
        None => (StatusCode::OK, None),
    };
    Ok(html(
        status,
        pages::new_key(&signed.nav(), &choices, form, message),
    ))
}

/// The create form, starting with the tenant's default key scopes checked
/// (so a name alone makes a working key).
pub(super) async fn new_key_page(State(state): State<AppState>, headers: HeaderMap) -> Page {
    let signed = signed_in(&state, &headers).await?;
    let plan = state.service.plan_of(signed.org()).await?;
    let defaults = plan.default_key_scopes(state.service.policy());
    let form = KeyForm {
        scopes: defaults.split(' ').map(str::to_string).collect(),
        ..KeyForm::default()
    };
    new_key_form(&state, &signed, &form, None).await
}

impl KeyForm {
    fn of(form: &Form) -> KeyForm {
        KeyForm {
            name: form.get("name").to_string(),
            environment: form.get("environment").to_string(),
            scopes: form.all("scopes"),
            tier: form.get("rate_limit_tier").to_string(),
            per_minute: form.get("per_minute").trim().to_string(),
            per_day: form.get("per_day").trim().to_string(),
            expires_at: form.get("expires_at").trim().to_string(),
            external_id: form.get("external_id").trim().to_string(),
            quota: form.get("quota").trim().to_string(),
            quota_refill: form.get("quota_refill").to_string(),
            spend_cap: form.get("spend_cap").trim().to_string(),
            spend_period: form.get("spend_period").to_string(),
        }
    }

    /// The body `POST /api/v1/api-keys` would take for this form (blank
    /// fields left out, no scope checked as none asked: the defaults; a
    /// `datetime-local` expiry read as UTC).
    fn as_json(&self) -> Value {
        let mut body = Map::new();
        body.insert("name".into(), json!(self.name));
        if !self.scopes.is_empty() {
            body.insert("scopes".into(), json!(self.scopes));
        }
        let mut put = |field: &str, value: &str| {
            if !value.is_empty() {
                body.insert(field.into(), json!(value));
            }
        };
        put("environment", &self.environment);
        put("rate_limit_tier", &self.tier);
        put("external_id", &self.external_id);
        let expires = match self.expires_at.len() {
            16 => format!("{}:00Z", self.expires_at),
            19 => format!("{}Z", self.expires_at),
            _ => self.expires_at.clone(),
        };
        put("expires_at", &expires);
        let mut limits = Map::new();
        for (field, value) in [("per_minute", &self.per_minute), ("per_day", &self.per_day)] {
            if !value.is_empty() {
                limits.insert(field.into(), number(value));
            }
        }
        if !limits.is_empty() {
            body.insert("rate_limits".into(), Value::Object(limits));
        }
        let budgets = [
            (
                "quota",
                "requests",
                &self.quota,
                "refill",
                &self.quota_refill,
            ),
            (
                "spend_cap",
                "micros",
                &self.spend_cap,
                "period",
                &self.spend_period,
            ),
        ];
        for (field, amount, value, period, every) in budgets {
            if !value.is_empty() {
                let every = (!every.is_empty()).then_some(every.as_str());
                body.insert(field.into(), json!({amount: number(value), period: every}));
            }
        }
        Value::Object(body)
    }
}

/// A typed number as JSON: the number, or the text as typed (which the
/// API's check then names).
fn number(value: &str) -> Value {
    value
        .parse::<u64>()
        .map_or_else(|_| json!(value), |n| json!(n))
}

pub(super) async fn create_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    source: Source,
    body: Result<Bytes, BytesRejection>,
) -> Page {
    let form = Form::parse(body)?;
    let signed = signed_form(&state, &headers, &form).await?;
    let typed = KeyForm::of(&form);
    let checked = serde_json::to_vec(&typed.as_json())
        .map_err(|_| ApiError::Internal)
        .and_then(|bytes| KeyDraft::from_json(&bytes))
        .and_then(|draft| draft.check(state.service.policy(), clock::now()));
    let created = match checked {
        Ok(spec) => state
            .service
            .create_key(signed.org(), spec)
            .await
            .map(|d| d.value),
        Err(e) => Err(e),
    };
    if let Ok(created) = &created {
        signed
            .record(&state, source, audit::creation(&created.key))
            .await;
    }
    match created {
        Ok(created) => Ok(html(
            StatusCode::CREATED,
            pages::created(
                &signed.nav(),
                "Key created",
                &created.api_key,
                &created.key,
                None,
            ),
        )),
        Err(e @ (ApiError::Invalid { .. } | ApiError::Forbidden(_))) => {
            new_key_form(&state, &signed, &typed, Some((e.status(), e.text()))).await
        }
        Err(e) => Err(e.into()),
    }
}

/// The key of a path in the signed-in tenant (a malformed id is as absent).
async fn key_of(
    state: &AppState,
    signed: &Signed,
    id: Result<Path<String>, PathRejection>,
) -> Result<KeyView, Refusal> {
    let id: KeyId = id
        .ok()
        .and_then(|Path(id)| id.parse().ok())
        .ok_or(ApiError::NotFound("API key"))?;
    Ok(state.service.get(signed.org(), id).await?)
}

pub(super) async fn key_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    id: Result<Path<String>, PathRejection>,
) -> Page {
    let signed = signed_in(&state, &headers).await?;
    let key = key_of(&state, &signed, id).await?;
    let range = match uri.query().unwrap_or("") {
        "range=7d" => "7d",
        "range=30d" => "30d",
        _ => "24h",
    };
    let (span, granularity) = match range {
        "7d" => (7 * 86_400, Granularity::Hour),
        "30d" => (30 * 86_400, Granularity::Day),
        _ => (86_400, Granularity::Hour),
    };
    let points = usage_points(&state.service, signed.org(), key.id, span, granularity).await?;
    let now = clock::rfc3339(clock::now());
    Ok(html(
        StatusCode::OK,
        pages::key_page(&signed.nav(), &key, &now, &points, range),
    ))
}

pub(super) async fn revoke_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Page {
    let signed = signed_in(&state, &headers).await?;
    let key = key_of(&state, &signed, id).await?;
    Ok(html(
        StatusCode::OK,
        pages::revoke_confirm(&signed.nav(), &key),
    ))
}

pub(super) async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    source: Source,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Page {
    let form = Form::parse(body)?;
    let signed = signed_form(&state, &headers, &form).await?;
    let key = key_of(&state, &signed, id).await?;
    let revoked = state.service.revoke(signed.org(), key.id).await?;
    signed
        .record(&state, source, audit::revocation(&revoked.value))
        .await;
    Ok(redirect(KEYS))
}

pub(super) async fn rotate_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Page {
    let signed = signed_in(&state, &headers).await?;
    let key = key_of(&state, &signed, id).await?;
    Ok(html(
        StatusCode::OK,
        pages::rotate_form(&signed.nav(), &key, None),
    ))
}

pub(super) async fn rotate(
    State(state): State<AppState>,
    headers: HeaderMap,
    source: Source,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Page {
    let form = Form::parse(body)?;
    let signed = signed_form(&state, &headers, &form).await?;
    let key = key_of(&state, &signed, id).await?;
    let grace = form.get("grace_seconds").parse::<u64>().map_err(|_| {
        ApiError::invalid(
            "grace_seconds",
            "grace_seconds must be a whole number of seconds",
        )
    })?;
    let grace = drafts::grace_seconds(json!({ "grace_seconds": grace }).to_string().as_bytes())?;
    let rotated = state
        .service
        .rotate(signed.org(), key.id, grace)
        .await?
        .value;
    let note = audit::rotation(&rotated.previous_key, &rotated.created.key, grace);
    signed.record(&state, source, note).await;
    let note = match grace {
        0 => "The old key no longer works.".to_string(),
        _ => format!(
            "The old key keeps working until {}.",
            clock::rfc3339(clock::now() + grace)
        ),
    };
    Ok(html(
        StatusCode::CREATED,
        pages::created(
            &signed.nav(),
            "Key rotated",
            &rotated.created.api_key,
            &rotated.created.key,
            Some(&note),
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_create_form_becomes_the_api_body() {
        let form = Form(vec![
            ("name".into(), "a".into()),
            ("scopes".into(), "x:read".into()),
            ("scopes".into(), "y:read".into()),
            ("per_minute".into(), "60".into()),
            ("per_day".into(), "many".into()),
            ("expires_at".into(), "2031-01-01T10:00".into()),
            ("external_id".into(), String::new()),
            ("quota".into(), "100".into()),
            ("quota_refill".into(), "daily".into()),
            ("spend_cap".into(), String::new()),
            ("spend_period".into(), "month".into()),
        ]);
        let body = KeyForm::of(&form).as_json();
        assert_eq!(
            body,
            json!({"name": "a", "scopes": ["x:read", "y:read"],
                   "rate_limits": {"per_minute": 60, "per_day": "many"},
                   "expires_at": "2031-01-01T10:00:00Z",
                   "quota": {"requests": 100, "refill": "daily"}})
        );
    }
}
