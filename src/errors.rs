//! The body of every refusal, in the dialect a deployment picked
//! (`error_format`, SPEC §4): one renderer for the filter (both adapters)
//! and the control plane.
//!
//! A refusal is an [`ErrorKind`] (its status and its name in each dialect,
//! one row of [`ErrorKind::row`]), a message and, for bad input, the field.
//! The statuses and messages are the same in every dialect; only the JSON
//! around them changes:
//!
//! - `keygate`: `{"error":{"type":"unauthorized","message":"…","field"?:"…"}}`
//! - `flat`: `{"error":"Unauthorized","message":"…","field"?:"…"}`
//! - `openai`: `{"error":{"message":"…","type":"authentication_error","param":null|"…","code":"invalid_api_key"}}`

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The JSON shape of refusals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorFormat {
    /// `{"error":{"type","message"}}` (SPEC §4).
    #[default]
    Keygate,
    /// `{"error":"<status text>","message"}`.
    Flat,
    /// `{"error":{"message","type","param","code"}}`, OpenAI's names.
    Openai,
}

/// What went wrong. Adding a refusal is one variant and one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    MissingKey,
    InvalidKey,
    ExpiredKey,
    MissingScope,
    WrongOrg,
    Suspended,
    /// A management request outside the tenant's plan (a tier, a limit).
    OutsidePlan,
    QuotaExceeded,
    RateLimited,
    NotReady,
    /// A 401 other than a key's (the feed token).
    Unauthorized,
    InvalidRequest,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    UriTooLong,
    HeadersTooLarge,
    Internal,
}

/// A kind's status and names: keygate `type`, OpenAI `type` and `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub status: u16,
    pub keygate: &'static str,
    pub openai_type: &'static str,
    pub openai_code: &'static str,
}

const fn row(
    status: u16,
    keygate: &'static str,
    openai_type: &'static str,
    openai_code: &'static str,
) -> Row {
    Row {
        status,
        keygate,
        openai_type,
        openai_code,
    }
}

impl ErrorKind {
    /// The one table of names: a new refusal is one line here.
    pub const fn row(self) -> Row {
        use ErrorKind::*;
        const AUTHN: &str = "authentication_error";
        const PERMISSION: &str = "permission_error";
        const INVALID: &str = "invalid_request_error";
        match self {
            MissingKey => row(401, "unauthorized", AUTHN, "missing_api_key"),
            InvalidKey => row(401, "unauthorized", AUTHN, "invalid_api_key"),
            ExpiredKey => row(401, "unauthorized", AUTHN, "expired_api_key"),
            Unauthorized => row(401, "unauthorized", AUTHN, "unauthorized"),
            MissingScope => row(403, "forbidden", PERMISSION, "insufficient_scope"),
            WrongOrg => row(403, "forbidden", PERMISSION, "organization_mismatch"),
            Suspended => row(403, "forbidden", PERMISSION, "organization_suspended"),
            OutsidePlan => row(403, "forbidden", PERMISSION, "outside_plan"),
            QuotaExceeded => row(
                402,
                "quota_exceeded",
                "insufficient_quota",
                "insufficient_quota",
            ),
            RateLimited => row(
                429,
                "rate_limited",
                "rate_limit_error",
                "rate_limit_exceeded",
            ),
            NotReady => row(503, "unavailable", "server_error", "service_unavailable"),
            InvalidRequest => row(400, "invalid_request", INVALID, "invalid_request"),
            NotFound => row(404, "not_found", INVALID, "not_found"),
            MethodNotAllowed => row(405, "method_not_allowed", INVALID, "method_not_allowed"),
            Conflict => row(409, "conflict", INVALID, "conflict"),
            PayloadTooLarge => row(413, "invalid_request", INVALID, "request_too_large"),
            UriTooLong => row(414, "invalid_request", INVALID, "uri_too_long"),
            HeadersTooLarge => row(431, "invalid_request", INVALID, "headers_too_large"),
            Internal => row(500, "internal", "server_error", "internal_error"),
        }
    }

    /// The HTTP status of this kind.
    pub const fn status(self) -> u16 {
        self.row().status
    }
}

/// The `flat` dialect's `error`: the status's reason phrase.
pub fn status_text(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        414 => "URI Too Long",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

#[derive(Serialize)]
struct Keygate<'a> {
    error: KeygateDetail<'a>,
}

#[derive(Serialize)]
struct KeygateDetail<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

#[derive(Serialize)]
struct Flat<'a> {
    error: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

#[derive(Serialize)]
struct Openai<'a> {
    error: OpenaiDetail<'a>,
}

#[derive(Serialize)]
struct OpenaiDetail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: &'a str,
}

impl ErrorFormat {
    /// Every format, by its configuration name.
    pub const ALL: [ErrorFormat; 3] =
        [ErrorFormat::Keygate, ErrorFormat::Flat, ErrorFormat::Openai];

    /// The name used in configuration (`error_format`, `--error-format`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorFormat::Keygate => "keygate",
            ErrorFormat::Flat => "flat",
            ErrorFormat::Openai => "openai",
        }
    }

    /// The JSON body of a refusal of `kind` saying `message`, naming
    /// `field` when the input was bad.
    pub fn render(self, kind: ErrorKind, message: &str, field: Option<&str>) -> String {
        let row = kind.row();
        let body = match self {
            ErrorFormat::Keygate => serde_json::to_string(&Keygate {
                error: KeygateDetail {
                    kind: row.keygate,
                    message,
                    field,
                },
            }),
            ErrorFormat::Flat => serde_json::to_string(&Flat {
                error: status_text(row.status),
                message,
                field,
            }),
            ErrorFormat::Openai => serde_json::to_string(&Openai {
                error: OpenaiDetail {
                    message,
                    kind: row.openai_type,
                    param: field,
                    code: row.openai_code,
                },
            }),
        };
        // Serialising strings into a String cannot fail.
        body.unwrap_or_default()
    }
}

impl fmt::Display for ErrorFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ErrorFormat::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not an error format (keygate, flat or openai)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn render(format: ErrorFormat, kind: ErrorKind, message: &str, field: Option<&str>) -> Value {
        serde_json::from_str(&format.render(kind, message, field)).unwrap()
    }

    #[test]
    fn keygate_is_the_spec_shape() {
        let body = ErrorFormat::Keygate.render(ErrorKind::InvalidKey, "Invalid API key", None);
        assert_eq!(
            body,
            r#"{"error":{"type":"unauthorized","message":"Invalid API key"}}"#
        );
        assert_eq!(
            render(
                ErrorFormat::Keygate,
                ErrorKind::InvalidRequest,
                "name must not be empty",
                Some("name")
            ),
            json!({"error": {"type": "invalid_request", "message": "name must not be empty", "field": "name"}})
        );
    }

    #[test]
    fn flat_names_the_status() {
        let cases = [
            (ErrorKind::MissingKey, "Unauthorized"),
            (ErrorKind::MissingScope, "Forbidden"),
            (ErrorKind::QuotaExceeded, "Payment Required"),
            (ErrorKind::RateLimited, "Too Many Requests"),
            (ErrorKind::NotReady, "Service Unavailable"),
            (ErrorKind::InvalidRequest, "Bad Request"),
            (
                ErrorKind::HeadersTooLarge,
                "Request Header Fields Too Large",
            ),
        ];
        for (kind, word) in cases {
            assert_eq!(
                render(ErrorFormat::Flat, kind, "m", None),
                json!({"error": word, "message": "m"}),
                "{kind:?}"
            );
        }
        let body = ErrorFormat::Flat.render(ErrorKind::ExpiredKey, "API key has expired", None);
        assert_eq!(
            body,
            r#"{"error":"Unauthorized","message":"API key has expired"}"#
        );
    }

    #[test]
    fn openai_types_and_codes() {
        assert_eq!(
            render(
                ErrorFormat::Openai,
                ErrorKind::InvalidKey,
                "Invalid API key",
                None
            ),
            json!({"error": {"message": "Invalid API key", "type": "authentication_error", "param": null, "code": "invalid_api_key"}})
        );
        assert_eq!(
            render(
                ErrorFormat::Openai,
                ErrorKind::InvalidRequest,
                "bad",
                Some("scopes")
            ),
            json!({"error": {"message": "bad", "type": "invalid_request_error", "param": "scopes", "code": "invalid_request"}})
        );
        let types = [
            (ErrorKind::MissingScope, "permission_error"),
            (ErrorKind::RateLimited, "rate_limit_error"),
            (ErrorKind::QuotaExceeded, "insufficient_quota"),
        ];
        for (kind, kind_type) in types {
            assert_eq!(
                render(ErrorFormat::Openai, kind, "m", None)["error"]["type"],
                kind_type
            );
        }
    }

    #[test]
    fn messages_are_escaped() {
        let v = render(ErrorFormat::Flat, ErrorKind::WrongOrg, "org \"x\"\n", None);
        assert_eq!(v["message"], "org \"x\"\n");
    }

    #[test]
    fn format_names() {
        for f in ErrorFormat::ALL {
            assert_eq!(f.as_str().parse::<ErrorFormat>(), Ok(f));
            let quoted = format!("\"{f}\"");
            assert_eq!(serde_json::from_str::<ErrorFormat>(&quoted).unwrap(), f);
        }
        assert!("OpenAI".parse::<ErrorFormat>().is_err());
    }
}
