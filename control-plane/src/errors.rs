//! Every refusal of the control plane as a JSON answer: the authentication
//! errors of SPEC §4 (the core's exact bodies), 400 `invalid_request` naming
//! the field, 404, 409, the requests HTTP parsing refuses (400, 414, 431) and
//! the rest.

use crate::store::StoreError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keygate::decision::{Deny, WWW_AUTHENTICATE};
use serde::Serialize;
use std::fmt;
use utoipa::ToSchema;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// Authentication or authorisation refused (SPEC §4).
    Deny(Deny),
    /// A 401 other than a key's (the feed token).
    Unauthorized(&'static str),
    /// Bad input; `message` names `field` too.
    Invalid { field: String, message: String },
    /// No such thing for this caller (`what`: "API key", "Tenant", …).
    NotFound(&'static str),
    /// The request conflicts with the current state.
    Conflict(String),
    /// The body is over the limit.
    TooLarge(usize),
    /// The path exists, the method does not.
    MethodNotAllowed,
    /// The HTTP request itself could not be parsed (hyper's 400).
    Malformed,
    /// The request target is longer than HTTP parsing allows (hyper's 414).
    UriTooLong,
    /// The request line and headers are over the limit (hyper's 431).
    HeadersTooLarge,
    /// The store failed; details are logged, not sent.
    Internal,
}

impl ApiError {
    /// A 400 naming `field`.
    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::Invalid {
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// The error of a request hyper refused while parsing it, by the status
    /// hyper answers (400, 414 or 431).
    pub fn unparsed(status: u16) -> Option<ApiError> {
        match status {
            400 => Some(ApiError::Malformed),
            414 => Some(ApiError::UriTooLong),
            431 => Some(ApiError::HeadersTooLarge),
            _ => None,
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::Deny(deny) => {
                StatusCode::from_u16(deny.status).unwrap_or(StatusCode::UNAUTHORIZED)
            }
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Malformed => StatusCode::BAD_REQUEST,
            ApiError::UriTooLong => StatusCode::URI_TOO_LONG,
            ApiError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> String {
        let (kind, message, field) = match self {
            ApiError::Deny(deny) => return deny.body.to_string(),
            ApiError::Unauthorized(message) => ("unauthorized", (*message).to_string(), None),
            ApiError::Invalid { field, message } => {
                ("invalid_request", message.clone(), Some(field.as_str()))
            }
            ApiError::NotFound(what) => ("not_found", format!("{what} not found"), None),
            ApiError::Conflict(message) => ("conflict", message.clone(), None),
            ApiError::TooLarge(limit) => (
                "invalid_request",
                format!("body is larger than {limit} bytes"),
                Some("body"),
            ),
            ApiError::MethodNotAllowed => ("method_not_allowed", "Method not allowed".into(), None),
            // The same words as Envoy's answers (envoy/envoy.yaml).
            ApiError::Malformed => ("invalid_request", "Malformed request".into(), None),
            ApiError::UriTooLong => ("invalid_request", "URI is too long".into(), None),
            ApiError::HeadersTooLarge => (
                "invalid_request",
                "Request headers are too large".into(),
                None,
            ),
            ApiError::Internal => ("internal", "Internal error".into(), None),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                kind,
                message: &message,
                field,
            },
        };
        serde_json::to_string(&body).unwrap_or_default()
    }
}

/// `{"error":{"type","message","field"?}}`, in the order of SPEC §4 (also
/// the shape of Envoy's and the filter's refusals).
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize, ToSchema)]
struct ErrorDetail<'a> {
    /// `invalid_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `conflict`, `rate_limited`, …
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
    /// The field a 400 is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.body())
    }
}

impl From<Deny> for ApiError {
    fn from(deny: Deny) -> ApiError {
        ApiError::Deny(deny)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::UnknownTenant => ApiError::NotFound("Tenant"),
            StoreError::Inactive => ApiError::Conflict("API key is revoked or expired".into()),
            StoreError::Duplicate | StoreError::Backend(_) => {
                tracing::error!(error = %e, "store failed");
                ApiError::Internal
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = json_body(self.status(), self.body());
        if response.status() == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(WWW_AUTHENTICATE),
            );
        }
        response
    }
}

/// A JSON answer from already-encoded JSON.
fn json_body(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `value` as a JSON answer with `status`.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_string(value) {
        Ok(body) => json_body(status, body),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode an answer");
            ApiError::Internal.into_response()
        }
    }
}
