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
//!
//! This file holds the routes and what every page shares (refusals,
//! headers, forms, the signed-in session); the pages are in `account`
//! (sign-in, sign-up, sign-out), `keys` and `hooks` (webhooks).

mod account;
mod chart;
mod hooks;
mod keys;
mod pages;
mod session;

use crate::audit::{Note, Source, Who};
use crate::body;
use crate::clock;
use crate::errors::ApiError;
use crate::service::Service;
use crate::state::AppState;
use crate::store::accounts::NewSession;
use crate::store::{StoreError, Tenant};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use keygate::ids::OrgId;
use maud::Markup;
use pages::Nav;
use session::{FORM_COOKIE, SESSION_COOKIE};

/// The dashboard's content security policy: no inline script or style.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   form-action 'self'; base-uri 'none'; frame-ancestors 'none'";
const CSS: &str = include_str!("assets/app.css");
const JS: &str = include_str!("assets/app.js");
const ICON: &str = include_str!("assets/favicon.svg");
const SIGN_IN: &str = "/dashboard/sign-in";
const WEBHOOKS: &str = "/dashboard/webhooks";
const KEYS: &str = "/dashboard/keys";

/// The dashboard's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(home))
        .route("/dashboard/", get(home))
        .route("/dashboard/assets/app.css", get(css))
        .route("/dashboard/assets/app.js", get(js))
        .route("/dashboard/assets/favicon.svg", get(icon))
        .route(SIGN_IN, get(account::sign_in_page).post(account::sign_in))
        .route(
            "/dashboard/sign-up",
            get(account::sign_up_page).post(account::sign_up),
        )
        .route(
            "/dashboard/sign-out",
            axum::routing::post(account::sign_out),
        )
        .route(KEYS, get(keys::keys))
        .route(
            "/dashboard/keys/new",
            get(keys::new_key_page).post(keys::create_key),
        )
        .route("/dashboard/keys/{id}", get(keys::key_page))
        .route(
            "/dashboard/keys/{id}/revoke",
            get(keys::revoke_page).post(keys::revoke),
        )
        .route(
            "/dashboard/keys/{id}/rotate",
            get(keys::rotate_page).post(keys::rotate),
        )
        .route(WEBHOOKS, get(hooks::webhooks_page).post(hooks::add_webhook))
        .route(
            "/dashboard/webhooks/{id}/delete",
            axum::routing::post(hooks::delete_webhook),
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_never_shows_secrets_and_escapes() {
        let page = pages::error_page(None, "t", "<script>alert(1)</script>");
        let text = page.into_string();
        assert!(text.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!text.contains("<script>alert"));
    }
}
