//! The operator API of SPEC §10 under `/operator/v1`: list and read tenants,
//! set a tenant's plan. It takes the operator token (`--operator-token-file`
//! or `KEYGATE_OPERATOR_TOKEN`), never a tenant key, compared in constant
//! time; without a configured token every operator route is a 404.

use crate::api::AppState;
use crate::audit::{self, Source, Who};
use crate::body::{self, Fields};
use crate::errors::{json, ApiError};
use crate::store::TenantPage;
use crate::views::{Delivered, TenantList};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use keygate::ids::OrgId;
use subtle::ConstantTimeEq;

/// The environment variable that may hold the operator token.
pub const TOKEN_ENV: &str = "KEYGATE_OPERATOR_TOKEN";
/// Tenants in a page when `limit` is not given.
const DEFAULT_LIMIT: usize = 50;
/// Most tenants in a page.
const MAX_LIMIT: usize = 100;
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
    fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
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

/// The operator routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/operator/v1/tenants", get(list))
        .route("/operator/v1/tenants/{id}", get(one).patch(patch))
}

type Answer = Result<Response, ApiError>;

/// The tenant id of a path; a malformed one is as unknown as a missing one.
fn org_id(path: Result<Path<String>, PathRejection>) -> Result<OrgId, ApiError> {
    let Path(id) = path.map_err(|_| ApiError::NotFound("Tenant"))?;
    id.parse().map_err(|_| ApiError::NotFound("Tenant"))
}

/// `limit` and `cursor` of the query; anything else is a 400 naming it.
fn page(uri: &Uri) -> Result<TenantPage, ApiError> {
    let mut page = TenantPage {
        after: None,
        limit: DEFAULT_LIMIT,
    };
    for pair in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "limit" => {
                page.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::invalid("limit", format!("limit must be 1 to {MAX_LIMIT}"))
                    })?;
            }
            "cursor" => {
                let after = value.parse().map_err(|_| {
                    ApiError::invalid("cursor", "cursor is not one this API returned")
                })?;
                page.after = Some(after);
            }
            other => {
                return Err(ApiError::invalid(
                    other,
                    format!("unknown query parameter: {other}"),
                ))
            }
        }
    }
    Ok(page)
}

/// `GET /operator/v1/tenants?limit&cursor`: tenants in id order; the cursor
/// is the last id of the page when more follow.
async fn list(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Answer {
    state.operator.check(&headers)?;
    let mut page = page(&uri)?;
    let limit = page.limit;
    page.limit = limit.saturating_add(1);
    let mut data = state.service.tenants(page).await?;
    let more = data.len() > limit;
    data.truncate(limit);
    let next_cursor = more
        .then(|| data.last().map(|t| t.id.to_string()))
        .flatten();
    Ok(json(StatusCode::OK, &TenantList { data, next_cursor }))
}

/// `GET /operator/v1/tenants/{id}`.
async fn one(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Answer {
    state.operator.check(&headers)?;
    let tenant = state.service.tenant(org_id(id)?).await?;
    Ok(json(StatusCode::OK, &tenant))
}

/// `PATCH /operator/v1/tenants/{id}` `{"plan"?, "suspended"?}`: checked
/// whole before anything is written; a change of `suspended` is delivered to
/// every Envoy before the answer (`propagated`).
async fn patch(
    State(state): State<AppState>,
    headers: HeaderMap,
    source: Source,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    state.operator.check(&headers)?;
    let org = org_id(id)?;
    // Every field is read and checked first, then applied.
    let mut fields = Fields::parse(&body::bytes(body)?, &["plan", "suspended"], false)?;
    let plan = fields.string("plan")?;
    let suspended = fields.boolean("suspended")?;
    if let Some(plan) = &plan {
        state.service.plans().named(plan, "plan")?;
    }
    let service = &state.service;
    let who = Who::operator(source);
    let mut tenant = service.tenant(org).await?;
    if let Some(plan) = plan {
        tenant = service.set_plan(org, &plan, "plan").await?;
        service
            .audit(org, &who, audit::plan_changed(&tenant.plan))
            .await;
    }
    let propagated = match suspended {
        Some(s) if s != tenant.suspended => {
            let delivered = service.set_suspended(org, s).await?;
            tenant.suspended = s;
            service.audit(org, &who, audit::suspension(s)).await;
            delivered.propagated
        }
        _ => None,
    };
    let answer = Delivered {
        value: tenant,
        propagated,
    };
    Ok(json(StatusCode::OK, &answer))
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

    #[test]
    fn pages_name_their_bad_parameter() {
        let field = |q: &str| match page(&format!("/t?{q}").parse().unwrap()) {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field("limit=0"), "limit");
        assert_eq!(field("limit=101"), "limit");
        assert_eq!(field("cursor=zz"), "cursor");
        assert_eq!(field("colour=red"), "colour");
        let ok = page(&"/t?limit=2&cursor=org_0000000000000001".parse().unwrap()).unwrap();
        assert_eq!(ok.limit, 2);
        assert_eq!(ok.after, Some(OrgId(1)));
    }
}
