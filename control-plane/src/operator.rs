//! The operator API of SPEC §10 under `/operator/v1`: create, list and read
//! tenants (creation is how tenants come when `--signup closed`, SPEC §15),
//! set a tenant's plan; and the data planes of SPEC §15
//! (crate::data_planes::api). It takes the operator token
//! (crate::operator_token), never a tenant key; without a configured token
//! every operator route is a 404.

use crate::audit::{self, Source, Who};
use crate::body::{self, Fields};
use crate::drafts::TenantDraft;
use crate::errors::{json, ApiError};
use crate::state::AppState;
use crate::store::TenantPage;
use crate::views::{Delivered, TenantList};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use keygate::ids::OrgId;

/// Tenants in a page when `limit` is not given.
const DEFAULT_LIMIT: usize = 50;
/// Most tenants in a page.
const MAX_LIMIT: usize = 100;

/// The operator routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/operator/v1/tenants", get(list).post(create))
        .route("/operator/v1/tenants/{id}", get(one).patch(patch))
        .merge(crate::data_planes::api::routes())
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

/// `POST /operator/v1/tenants` `{"name","email","password"?}`: a tenant and
/// its first key, as a sign-up makes them, whatever `--signup` and the
/// per-address sign-up limit say.
async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    state.operator.check(&headers)?;
    let spec = TenantDraft::from_json(&body::bytes(body)?)?.check()?;
    let created = state.service.create_tenant(spec).await?;
    Ok(json(StatusCode::CREATED, &created))
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
