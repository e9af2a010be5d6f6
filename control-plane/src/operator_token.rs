//! The operator token of the operator API (crate::operator):
//! `--operator-token-file` or `KEYGATE_OPERATOR_TOKEN`, kept as its SHA-256
//! only and compared in constant time.

use crate::errors::ApiError;
use axum::http::{header, HeaderMap};
use subtle::ConstantTimeEq;

/// The environment variable that may hold the operator token.
pub const TOKEN_ENV: &str = "KEYGATE_OPERATOR_TOKEN";
/// Shorter operator tokens are refused at start.
const MIN_TOKEN_LEN: usize = 16;

/// The configured operator token, kept as its SHA-256 only (`None`: the
/// operator API is off).
#[derive(Debug, Clone, Default)]
pub struct OperatorToken {
    digest: Option<[u8; 32]>,
}

impl OperatorToken {
    /// The token of `file` or else of `env` (its value), trimmed; both, an
    /// unreadable file or a short token is an error naming the setting.
    pub fn configure(file: Option<&std::path::Path>, env: Option<String>) -> Result<Self, String> {
        let (token, setting) = match (file, env) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "--operator-token-file and {TOKEN_ENV} are both set: use one"
                ))
            }
            (Some(path), None) => (
                std::fs::read_to_string(path).map_err(|e| {
                    format!("--operator-token-file {}: cannot read: {e}", path.display())
                })?,
                "--operator-token-file",
            ),
            (None, Some(value)) => (value, TOKEN_ENV),
            (None, None) => return Ok(OperatorToken::default()),
        };
        let token = token.trim();
        if token.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "{setting}: the operator token must have at least {MIN_TOKEN_LEN} characters"
            ));
        }
        Ok(OperatorToken {
            digest: Some(keygate::key::hash(token)),
        })
    }

    /// True when an operator token is configured.
    pub fn is_configured(&self) -> bool {
        self.digest.is_some()
    }

    /// Lets the request through if its `Authorization: Bearer` is the token:
    /// 404 when none is configured, 401 when missing or wrong.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(digest) = &self.digest else {
            return Err(ApiError::NotFound("Route"));
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let matches = presented
            .is_some_and(|token| bool::from(keygate::key::hash(token).ct_eq(digest.as_slice())));
        if !matches {
            return Err(ApiError::Unauthorized("Missing or invalid operator token"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
        headers.insert(header::AUTHORIZATION, value);
        headers
    }
    #[test]
    fn the_token_opens_the_api_and_nothing_else_does() {
        let token =
            OperatorToken::configure(None, Some("operator-token-0123456789\n".into())).unwrap();
        assert!(token.check(&bearer("operator-token-0123456789")).is_ok());
        assert_eq!(
            token.check(&bearer("operator-token-012345678")),
            Err(ApiError::Unauthorized("Missing or invalid operator token"))
        );
        assert!(token.check(&HeaderMap::new()).is_err());
        let off = OperatorToken::default();
        assert_eq!(off.check(&bearer("x")), Err(ApiError::NotFound("Route")));
        assert!(OperatorToken::configure(None, Some("short".into())).is_err());
        let both = OperatorToken::configure(Some(std::path::Path::new("/x")), Some("y".into()));
        assert!(both.unwrap_err().contains("both"));
    }
}
