//! The dashboard's sign-in, sign-up and sign-out pages (sign-up is limited
//! and a failed sign-in slowed down by crate::signin, whose refusals are
//! shown as these pages with `retry-after`; a sign-in is audited in the
//! tenant's log).

use super::pages::{self, Nav};
use super::session::{self, FORM_COOKIE, SESSION_COOKIE};
use super::{
    anonymous, html, redirect, session_of, start_session, with_cookie, Form, Page, Refusal, KEYS,
    SIGN_IN,
};
use crate::audit::Source;
use crate::drafts::TenantDraft;
use crate::errors::ApiError;
use crate::password::Password;
use crate::signin::throttle;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use keygate::ids::OrgId;

/// The hash an unknown email's password is checked against: of a random
/// password, made once.
async fn unknown_hash(state: &AppState) -> Result<String, ApiError> {
    let hash = state
        .sign_in
        .unknown
        .get_or_try_init(|| async {
            let random = session::new_id().ok_or(ApiError::Internal)?;
            Password::typed(random).hash(state.service.hashing()).await
        })
        .await?;
    Ok(hash.clone())
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

pub(super) async fn sign_in_page(State(state): State<AppState>, headers: HeaderMap) -> Page {
    if session_of(&state.service, &headers).await?.is_some() {
        return Ok(redirect(KEYS));
    }
    anonymous(&headers, StatusCode::OK, |csrf| {
        pages::sign_in(csrf, "", None)
    })
}

pub(super) async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    source: Source,
    body: Result<Bytes, BytesRejection>,
) -> Page {
    let form = Form::parse(body)?;
    form.check_csrf(session::cookie(&headers, FORM_COOKIE))?;
    let email = form.get("email").trim().to_string();
    let address = source.0.clone();
    let again = |status, message: &str| {
        anonymous(&headers, status, |csrf| {
            pages::sign_in(csrf, &email, Some(message))
        })
    };
    let store = state.service.store();
    // Counted before the check: parallel guesses get no more checks.
    if let Err(seconds) = throttle::reserve(store, &email, &address).await? {
        let message = wait_message("Too many failed sign-ins", seconds);
        return with_retry_after(again(StatusCode::TOO_MANY_REQUESTS, &message), seconds);
    }
    let account = store.account(email.clone()).await?;
    let typed = Password::typed(form.get("password").to_string());
    // An unknown email costs a hash check too: the time does not tell.
    let (org, stored) = match account {
        Some(account) => (Some(account.org), account.password_hash),
        None => (None, unknown_hash(&state).await?),
    };
    let right = match typed.verify(stored, state.service.hashing()).await {
        Err(ApiError::RateLimited { retry_after }) => {
            let message = wait_message("Too many sign-ins at once", retry_after);
            let page = again(StatusCode::TOO_MANY_REQUESTS, &message);
            return with_retry_after(page, retry_after);
        }
        other => other?,
    };
    let org = match org {
        Some(org) if right => org,
        other => {
            record_sign_in(&state, other, &email, source, false).await;
            return again(StatusCode::UNAUTHORIZED, "Wrong email or password.");
        }
    };
    throttle::succeeded(store, &email, &address).await?;
    record_sign_in(&state, Some(org), &email, source, true).await;
    let cookie = start_session(&state.service, org, &headers).await?;
    Ok(with_cookie(redirect(KEYS), &cookie))
}

/// "`what`: try again in `seconds` s."
fn wait_message(what: &str, seconds: u64) -> String {
    format!("{what}: try again in {seconds} s.")
}

/// `page` with a `retry-after` of `seconds`.
fn with_retry_after(page: Page, seconds: u64) -> Page {
    let mut page = page?;
    page.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    Ok(page)
}

pub(super) async fn sign_up_page(State(state): State<AppState>, headers: HeaderMap) -> Page {
    if session_of(&state.service, &headers).await?.is_some() {
        return Ok(redirect(KEYS));
    }
    anonymous(&headers, StatusCode::OK, |csrf| {
        pages::sign_up(csrf, "", "", None)
    })
}

pub(super) async fn sign_up(
    State(state): State<AppState>,
    headers: HeaderMap,
    source: Source,
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
    let sign_up = state.sign_in.sign_up;
    let created = sign_up.register(&state.service, draft, &source).await;
    let created = created.map(|delivered| delivered.value);
    let again = |e: &ApiError, message: &str| {
        anonymous(&headers, e.status(), |csrf| {
            pages::sign_up(csrf, name, email, Some(message))
        })
    };
    let created = match created {
        Ok(created) => created,
        Err(e @ ApiError::RateLimited { retry_after }) => {
            let message = wait_message("Too many sign-ups", retry_after);
            return with_retry_after(again(&e, &message), retry_after);
        }
        Err(e @ (ApiError::Invalid { .. } | ApiError::Conflict(_) | ApiError::Forbidden(_))) => {
            return again(&e, &e.text())
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

pub(super) async fn sign_out(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_cookie_has_its_value() {
        assert_eq!(cookie_value("keygate_session=abc; Path=/"), "abc");
    }
}
