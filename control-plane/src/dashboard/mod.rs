//! The web dashboard under `/dashboard` (SPEC §12): sign-up, sign-in and
//! sign-out with a session cookie, and pages to list, create, inspect,
//! revoke and rotate a tenant's keys, with their usage.
//!
//! Every change goes through the same [`Service`] calls as the API (same
//! rules, plan checks, management rate and feed revisions); a session acts
//! for its tenant as a `tenant:admin` key would, and authorises only these
//! pages (the API takes only keys). Every form carries a CSRF token
//! ([`session`]); failed sign-ins are slowed down (crate::signin). Pages are
//! never cached, and carry a CSP that allows only this module's assets.

mod chart;
mod pages;
mod session;

use crate::audit::{self, Note, Source, Who};
use crate::body;
use crate::clock;
use crate::drafts::{self, KeyDraft, TenantDraft};
use crate::errors::ApiError;
use crate::events::EVENT_TYPES;
use crate::listing::ListDraft;
use crate::password::Password;
use crate::service::Service;
use crate::signin::SignInState;
use crate::state::AppState;
use crate::store::accounts::NewSession;
use crate::store::usage::{Granularity, UsageQuery, UsageScope};
use crate::store::{StoreError, Tenant};
use crate::views::KeyView;
use crate::webhooks::{self, WebhookView};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chart::Point;
use keygate::ids::{KeyId, OrgId};
use keygate::key::Environment;
use maud::Markup;
use pages::{Choices, KeyForm, Nav};
use serde_json::{json, Map, Value};
use session::{FORM_COOKIE, SESSION_COOKIE};
use std::time::Instant;

/// The dashboard's content security policy: no inline script or style.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   form-action 'self'; base-uri 'none'; frame-ancestors 'none'";
const CSS: &str = include_str!("assets/app.css");
const JS: &str = include_str!("assets/app.js");
const ICON: &str = include_str!("assets/favicon.svg");
const SIGN_IN: &str = "/dashboard/sign-in";
const WEBHOOKS: &str = "/dashboard/webhooks";
const KEYS: &str = "/dashboard/keys";

/// The hash an unknown email's password is checked against: of a random
/// password, made once.
async fn unknown_hash(sign_in: &SignInState) -> Result<String, ApiError> {
    let hash = sign_in
        .unknown
        .get_or_try_init(|| async {
            let random = session::new_id().ok_or(ApiError::Internal)?;
            Password::typed(random).hash().await
        })
        .await?;
    Ok(hash.clone())
}

/// The dashboard's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(home))
        .route("/dashboard/", get(home))
        .route("/dashboard/assets/app.css", get(css))
        .route("/dashboard/assets/app.js", get(js))
        .route("/dashboard/assets/favicon.svg", get(icon))
        .route(SIGN_IN, get(sign_in_page).post(sign_in))
        .route("/dashboard/sign-up", get(sign_up_page).post(sign_up))
        .route("/dashboard/sign-out", axum::routing::post(sign_out))
        .route(KEYS, get(keys))
        .route("/dashboard/keys/new", get(new_key_page).post(create_key))
        .route("/dashboard/keys/{id}", get(key_page))
        .route("/dashboard/keys/{id}/revoke", get(revoke_page).post(revoke))
        .route("/dashboard/keys/{id}/rotate", get(rotate_page).post(rotate))
        .route(WEBHOOKS, get(webhooks_page).post(add_webhook))
        .route(
            "/dashboard/webhooks/{id}/delete",
            axum::routing::post(delete_webhook),
        )
}

/// Records a sign-in or a failed one: in the tenant's audit log, and as a
/// log line (never the password), the only trace of one for an unknown
/// email.
async fn record_sign_in(
    state: &AppState,
    org: Option<OrgId>,
    email: &str,
    source: Source,
    succeeded: bool,
) {
    tracing::info!(org_id = ?org.map(|o| o.to_string()), address = %source.0, succeeded,
                   "dashboard sign-in");
    if let Some(org) = org {
        state
            .service
            .audit_sign_in(org, email, source, succeeded)
            .await;
    }
}

/// Why a page is not shown: not signed in (to the sign-in page), or a
/// refusal shown as a page with its status.
enum Refusal {
    SignIn,
    Shown(StatusCode, String),
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Refusal {
        Refusal::Shown(e.status(), e.text())
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Refusal {
        ApiError::from(e).into()
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::SignIn => redirect(SIGN_IN),
            Refusal::Shown(status, message) => {
                let title = status.canonical_reason().unwrap_or("Error");
                html(status, pages::error_page(None, title, &message))
            }
        }
    }
}

type Page = Result<Response, Refusal>;

/// The CSRF refusal.
fn csrf_refused() -> Refusal {
    Refusal::Shown(
        StatusCode::FORBIDDEN,
        "This form's CSRF token is missing or wrong (it did not come from this dashboard \
         session). Reload the page and submit the form again."
            .into(),
    )
}

/// A page: HTML, never cached, with the dashboard's CSP.
fn html(status: StatusCode, markup: Markup) -> Response {
    let mut response = (status, markup.into_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(headers);
    response
}

fn secure_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// A 303 to `to`.
fn redirect(to: &'static str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    secure_headers(response.headers_mut());
    response
}

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

async fn css() -> Response {
    asset(CSS, "text/css; charset=utf-8")
}

async fn js() -> Response {
    asset(JS, "text/javascript; charset=utf-8")
}

async fn icon() -> Response {
    asset(ICON, "image/svg+xml")
}

/// A form body: its pairs in order.
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(body: Result<Bytes, BytesRejection>) -> Result<Form, Refusal> {
        let bytes = body::bytes(body)?;
        Ok(Form(form_urlencoded::parse(&bytes).into_owned().collect()))
    }

    fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The form's CSRF token matches the cookie value `seed`.
    fn check_csrf(&self, seed: Option<&str>) -> Result<(), Refusal> {
        match seed {
            Some(seed) if session::csrf_matches(seed, self.get("csrf")) => Ok(()),
            _ => Err(csrf_refused()),
        }
    }
}

/// A signed-in request: its session id and tenant.
struct Signed {
    id: String,
    tenant: Tenant,
    csrf: String,
}

impl Signed {
    fn org(&self) -> OrgId {
        self.tenant.id
    }

    /// Records `note` in the tenant's audit log, by its dashboard user.
    async fn record(&self, state: &AppState, source: Source, note: Note) {
        let who = Who::dashboard(&self.tenant.email, source);
        state.service.audit(self.org(), &who, note).await;
    }

    fn nav(&self) -> Nav<'_> {
        Nav {
            tenant: &self.tenant.name,
            email: &self.tenant.email,
            csrf: &self.csrf,
        }
    }
}

/// The request's session, if its cookie names a live one.
async fn session_of(service: &Service, headers: &HeaderMap) -> Result<Option<Signed>, ApiError> {
    let Some(id) = session::cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let store = service.store();
    let Some(org) = store.session(session::id_hash(id), clock::now()).await? else {
        return Ok(None);
    };
    let tenant = store
        .tenant(org)
        .await?
        .ok_or(ApiError::NotFound("Tenant"))?;
    Ok(Some(Signed {
        id: id.to_string(),
        csrf: session::csrf_token(id),
        tenant,
    }))
}

/// The request's session, or the way to the sign-in page; a suspended
/// tenant's session is refused (403) as its keys are.
async fn signed_in(state: &AppState, headers: &HeaderMap) -> Result<Signed, Refusal> {
    let signed = session_of(&state.service, headers)
        .await?
        .ok_or(Refusal::SignIn)?;
    if signed.tenant.suspended {
        return Err(Refusal::Shown(
            StatusCode::FORBIDDEN,
            "Organization is suspended".into(),
        ));
    }
    Ok(signed)
}

/// A signed-in form submission: the session, CSRF-checked, within the
/// tenant's management rate (as an API call would be).
async fn signed_form(
    state: &AppState,
    headers: &HeaderMap,
    form: &Form,
) -> Result<Signed, Refusal> {
    let signed = signed_in(state, headers).await?;
    form.check_csrf(Some(&signed.id))?;
    state.service.throttle(signed.org()).await?;
    Ok(signed)
}

/// Starts a session for `org`; the cookie that carries it.
async fn start_session(
    service: &Service,
    org: OrgId,
    headers: &HeaderMap,
) -> Result<String, ApiError> {
    let id = session::new_id().ok_or(ApiError::Internal)?;
    let now = clock::now();
    service
        .store()
        .create_session(NewSession {
            id_hash: session::id_hash(&id),
            org,
            created_at: now,
            expires_at: now + session::SESSION_SECONDS,
        })
        .await?;
    Ok(session::session_cookie(&id, session::over_tls(headers)))
}

/// The seed of the anonymous forms' CSRF token, and the cookie to set if new.
fn form_seed(headers: &HeaderMap) -> Result<(String, Option<String>), ApiError> {
    if let Some(seed) = session::cookie(headers, FORM_COOKIE) {
        return Ok((seed.to_string(), None));
    }
    let seed = session::new_id().ok_or(ApiError::Internal)?;
    let cookie = session::form_cookie(&seed, session::over_tls(headers));
    Ok((seed, Some(cookie)))
}

/// An anonymous form page with its CSRF cookie.
fn anonymous(headers: &HeaderMap, status: StatusCode, page: impl FnOnce(&str) -> Markup) -> Page {
    let (seed, cookie) = form_seed(headers)?;
    let response = html(status, page(&session::csrf_token(&seed)));
    Ok(match cookie {
        Some(cookie) => with_cookie(response, &cookie),
        None => response,
    })
}

async fn home(State(state): State<AppState>, headers: HeaderMap) -> Page {
    Ok(match session_of(&state.service, &headers).await? {
        Some(_) => redirect(KEYS),
        None => redirect(SIGN_IN),
    })
}

async fn sign_in_page(State(state): State<AppState>, headers: HeaderMap) -> Page {
    if session_of(&state.service, &headers).await?.is_some() {
        return Ok(redirect(KEYS));
    }
    anonymous(&headers, StatusCode::OK, |csrf| {
        pages::sign_in(csrf, "", None)
    })
}

async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    source: Source,
    body: Result<Bytes, BytesRejection>,
) -> Page {
    let form = Form::parse(body)?;
    form.check_csrf(session::cookie(&headers, FORM_COOKIE))?;
    let email = form.get("email").trim().to_string();
    let address = source.0.clone();
    let throttle = &state.sign_in.throttle;
    let again = |status, message: &str| {
        anonymous(&headers, status, |csrf| {
            pages::sign_in(csrf, &email, Some(message))
        })
    };
    if let Err(wait) = throttle.check(&email, &address, Instant::now()) {
        let seconds = wait.as_secs_f64().ceil().max(1.0);
        let message = format!("Too many failed sign-ins: try again in {seconds} s.");
        let mut page = again(StatusCode::TOO_MANY_REQUESTS, &message)?;
        page.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds as u64));
        return Ok(page);
    }
    let account = state.service.store().account(email.clone()).await?;
    let typed = Password::typed(form.get("password").to_string());
    // An unknown email costs a hash check too: the time does not tell.
    let (org, stored) = match account {
        Some(account) => (Some(account.org), account.password_hash),
        None => (None, unknown_hash(&state.sign_in).await?),
    };
    let org = match org {
        Some(org) if typed.verify(stored).await? => org,
        other => {
            throttle.failed(&email, &address, Instant::now());
            record_sign_in(&state, other, &email, source, false).await;
            return again(StatusCode::UNAUTHORIZED, "Wrong email or password.");
        }
    };
    throttle.succeeded(&email, &address);
    record_sign_in(&state, Some(org), &email, source, true).await;
    let cookie = start_session(&state.service, org, &headers).await?;
    Ok(with_cookie(redirect(KEYS), &cookie))
}

async fn sign_up_page(State(state): State<AppState>, headers: HeaderMap) -> Page {
    if session_of(&state.service, &headers).await?.is_some() {
        return Ok(redirect(KEYS));
    }
    anonymous(&headers, StatusCode::OK, |csrf| {
        pages::sign_up(csrf, "", "", None)
    })
}

async fn sign_up(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Page {
    let form = Form::parse(body)?;
    form.check_csrf(session::cookie(&headers, FORM_COOKIE))?;
    let (name, email) = (form.get("name"), form.get("email"));
    let draft = TenantDraft {
        name: Some(name.to_string()),
        email: Some(email.to_string()),
        password: Some(Password::typed(form.get("password").to_string())),
    };
    let created = match draft.check() {
        Ok(spec) => state.service.create_tenant(spec).await,
        Err(e) => Err(e),
    };
    let created = match created {
        Ok(created) => created,
        Err(e @ (ApiError::Invalid { .. } | ApiError::Conflict(_))) => {
            return anonymous(&headers, e.status(), |csrf| {
                pages::sign_up(csrf, name, email, Some(&e.text()))
            })
        }
        Err(e) => return Err(e.into()),
    };
    let cookie = start_session(&state.service, created.tenant_id, &headers).await?;
    let tenant = state.service.store().tenant(created.tenant_id).await?;
    let tenant = tenant.ok_or(ApiError::NotFound("Tenant"))?;
    let seed = cookie_value(&cookie);
    let csrf = session::csrf_token(seed);
    let nav = Nav {
        tenant: &tenant.name,
        email: &tenant.email,
        csrf: &csrf,
    };
    let page = html(
        StatusCode::CREATED,
        pages::signed_up(&nav, &created.api_key),
    );
    Ok(with_cookie(page, &cookie))
}

/// The value of a `Set-Cookie` string made by [`session`].
fn cookie_value(set_cookie: &str) -> &str {
    set_cookie
        .split(';')
        .next()
        .and_then(|pair| pair.split_once('='))
        .map_or("", |(_, v)| v)
}

async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Page {
    let form = Form::parse(body)?;
    let signed = session_of(&state.service, &headers)
        .await?
        .ok_or(Refusal::SignIn)?;
    form.check_csrf(Some(&signed.id))?;
    state
        .service
        .store()
        .end_session(session::id_hash(&signed.id))
        .await?;
    let gone = session::set_cookie(SESSION_COOKIE, "", 0, session::over_tls(&headers));
    Ok(with_cookie(redirect(SIGN_IN), &gone))
}

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

async fn keys(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Page {
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

async fn new_key_page(State(state): State<AppState>, headers: HeaderMap) -> Page {
    let signed = signed_in(&state, &headers).await?;
    new_key_form(&state, &signed, &KeyForm::default(), None).await
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
    /// fields left out; a `datetime-local` expiry read as UTC).
    fn as_json(&self) -> Value {
        let mut body = Map::new();
        body.insert("name".into(), json!(self.name));
        body.insert("scopes".into(), json!(self.scopes));
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

async fn create_key(
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
        Ok(spec) => state.service.create_key(signed.org(), spec).await,
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

async fn key_page(
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

async fn revoke_page(
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

async fn revoke(
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

async fn rotate_page(
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

async fn rotate(
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

async fn webhooks_page(State(state): State<AppState>, headers: HeaderMap) -> Page {
    let signed = signed_in(&state, &headers).await?;
    webhooks_list(&state, &signed, None).await
}

async fn add_webhook(
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

async fn delete_webhook(
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
        assert_eq!(cookie_value("keygate_session=abc; Path=/"), "abc");
    }

    #[test]
    fn a_session_never_shows_secrets_and_escapes() {
        let page = pages::error_page(None, "t", "<script>alert(1)</script>");
        let text = page.into_string();
        assert!(text.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!text.contains("<script>alert"));
    }
}
