//! Every refusal of the control plane as a JSON answer: the authentication
//! errors of SPEC §4 (the core's kinds and messages), 400 `invalid_request`
//! naming the field, 403 outside the plan, 404, 409, 429 over the
//! management rate, the requests HTTP parsing refuses (400, 414,
//! 431) and the rest, each rendered by the core's renderer in the
//! configured dialect (`--error-format`).

use crate::store::StoreError;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keygate::decision::{Deny, WWW_AUTHENTICATE};
use keygate::errors::{ErrorFormat, ErrorKind};
use serde::Serialize;
use std::borrow::Cow;
use std::fmt;
use utoipa::ToSchema;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// Authentication or authorisation refused (SPEC §4).
    Deny(Deny),
    /// A 401 other than a key's (the feed token).
    Unauthorized(&'static str),
    /// Outside what the tenant's plan allows (403 `forbidden`).
    Forbidden(String),
    /// Over the tenant's management-API rate: 429 with `retry-after`
    /// (whole seconds).
    RateLimited { retry_after: u64 },
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

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.kind().status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The refusal's kind: its status and its names in each dialect.
    fn kind(&self) -> ErrorKind {
        match self {
            ApiError::Deny(deny) => deny.kind,
            ApiError::Unauthorized(_) => ErrorKind::Unauthorized,
            ApiError::Forbidden(_) => ErrorKind::OutsidePlan,
            ApiError::RateLimited { .. } => ErrorKind::RateLimited,
            ApiError::Invalid { .. } | ApiError::Malformed => ErrorKind::InvalidRequest,
            ApiError::NotFound(_) => ErrorKind::NotFound,
            ApiError::Conflict(_) => ErrorKind::Conflict,
            ApiError::TooLarge(_) => ErrorKind::PayloadTooLarge,
            ApiError::MethodNotAllowed => ErrorKind::MethodNotAllowed,
            ApiError::UriTooLong => ErrorKind::UriTooLong,
            ApiError::HeadersTooLarge => ErrorKind::HeadersTooLarge,
            ApiError::Internal => ErrorKind::Internal,
        }
    }

    /// The message, and the field a bad input names.
    fn message(&self) -> (Cow<'_, str>, Option<&str>) {
        let text = |s: &'static str| (Cow::Borrowed(s), None);
        match self {
            ApiError::Deny(deny) => (Cow::Borrowed(&*deny.message), None),
            ApiError::Unauthorized(message) => text(message),
            ApiError::Forbidden(message) => (Cow::Borrowed(message), None),
            // The words of the data plane's 429 (SPEC §4).
            ApiError::RateLimited { .. } => text("Rate limit exceeded"),
            ApiError::Invalid { field, message } => (Cow::Borrowed(message), Some(field)),
            ApiError::NotFound(what) => (Cow::Owned(format!("{what} not found")), None),
            ApiError::Conflict(message) => (Cow::Borrowed(message), None),
            ApiError::TooLarge(limit) => (
                Cow::Owned(format!("body is larger than {limit} bytes")),
                Some("body"),
            ),
            ApiError::MethodNotAllowed => text("Method not allowed"),
            // The same words as Envoy's answers (envoy/envoy.yaml).
            ApiError::Malformed => text("Malformed request"),
            ApiError::UriTooLong => text("URI is too long"),
            ApiError::HeadersTooLarge => text("Request headers are too large"),
            ApiError::Internal => text("Internal error"),
        }
    }

    /// The message alone (for the dashboard's pages).
    pub fn text(&self) -> String {
        self.message().0.into_owned()
    }

    /// The JSON body in `format`.
    pub fn body(&self, format: ErrorFormat) -> String {
        let (message, field) = self.message();
        format.render(self.kind(), &message, field)
    }
}

/// `{"error":{"type","message","field"?}}`, in the order of SPEC §4 (also
/// the shape of Envoy's and the filter's refusals): the OpenAPI schema of the
/// default `keygate` dialect (bodies are rendered by [`ApiError::body`]).
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
        f.write_str(&self.body(ErrorFormat::Keygate))
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

/// The answer in the `keygate` dialect; [`in_dialect`] re-renders it in the
/// configured one (it finds the error in the answer's extensions).
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = json_body(self.status(), self.body(ErrorFormat::Keygate));
        if let ApiError::RateLimited { retry_after } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        if response.status() == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(WWW_AUTHENTICATE),
            );
        }
        response.extensions_mut().insert(self);
        response
    }
}

/// Middleware: every error answer with its body in `format`
/// (`--error-format`).
pub async fn in_dialect(
    State(format): State<ErrorFormat>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    if format == ErrorFormat::Keygate {
        return response;
    }
    if let Some(error) = response.extensions_mut().remove::<ApiError>() {
        let body = error.body(format);
        let headers = response.headers_mut();
        headers.remove(header::CONTENT_LENGTH);
        *response.body_mut() = Body::from(body);
    }
    response
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
