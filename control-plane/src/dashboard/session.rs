//! Dashboard sessions and CSRF tokens: random ids in an `HttpOnly` cookie
//! (only their SHA-256 is stored), and a CSRF token derived from the
//! cookie a form was served with.
//!
//! A signed-in page's forms carry the token of the session cookie; the
//! sign-in and sign-up forms, before any session, that of a random
//! `keygate_form` cookie. A form is taken only when its token matches the
//! cookie that came with it: another site can make a browser send the
//! cookie, but cannot read the page for the token.

use axum::http::HeaderMap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The session cookie.
pub const SESSION_COOKIE: &str = "keygate_session";
/// The cookie the forms before sign-in derive their token from.
pub const FORM_COOKIE: &str = "keygate_form";
/// How long a session lasts (seconds).
pub const SESSION_SECONDS: u64 = 12 * 3600;
/// How long the form cookie lasts (seconds).
const FORM_SECONDS: u64 = 3600;
/// The path every cookie is limited to.
const COOKIE_PATH: &str = "/dashboard";

/// A fresh random id (256 bits, URL-safe base64), for a session or form cookie.
pub fn new_id() -> Option<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).ok()?;
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

/// What the store keeps of a session id.
pub fn id_hash(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// The CSRF token of the forms served with cookie value `seed`.
pub fn csrf_token(seed: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"keygate dashboard csrf\0");
    hasher.update(seed.as_bytes());
    hex::encode(hasher.finalize())
}

/// Whether `token` (from a form) is the CSRF token of `seed`.
pub fn csrf_matches(seed: &str, token: &str) -> bool {
    csrf_token(seed).as_bytes().ct_eq(token.as_bytes()).into()
}

/// The value of cookie `name` in the request, if sent.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, v)| *n == name && !v.is_empty())
        .map(|(_, v)| v)
}

/// True if the request came over TLS (Envoy's `x-forwarded-proto`).
pub fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Lax`, path `/dashboard`,
/// `Secure` over TLS; `max_age` 0 deletes the cookie.
pub fn set_cookie(name: &str, value: &str, max_age: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path={COOKIE_PATH}; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}")
}

/// The session cookie for `id`.
pub fn session_cookie(id: &str, secure: bool) -> String {
    set_cookie(SESSION_COOKIE, id, SESSION_SECONDS, secure)
}

/// The form cookie for `seed`.
pub fn form_cookie(seed: &str, secure: bool) -> String {
    set_cookie(FORM_COOKIE, seed, FORM_SECONDS, secure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_cookies() {
        let id = new_id().unwrap();
        assert_eq!(id.len(), 43);
        assert_ne!(new_id().unwrap(), id);
        let token = csrf_token(&id);
        assert!(csrf_matches(&id, &token));
        assert!(!csrf_matches(&id, ""));
        assert!(!csrf_matches("other", &token));
        let mut headers = HeaderMap::new();
        headers.insert("cookie", "a=1; keygate_session=abc; b=".parse().unwrap());
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "b"), None);
        let set = session_cookie("abc", true);
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Lax") && set.ends_with("Secure")
        );
        assert!(!session_cookie("abc", false).contains("Secure"));
    }
}
