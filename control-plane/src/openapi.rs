//! The OpenAPI 3.1 document of the management API, generated from the
//! handlers' path annotations (crate::api) and the request and response
//! types (crate::drafts, crate::views, crate::errors), served at
//! [`PATH`]. Every operation also lists the refusals of SPEC §4 it can meet
//! on its way through Envoy and the control plane ([`Refusals`]).

use crate::errors::ErrorBody;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

/// Where the document is served (a public route).
pub const PATH: &str = "/api/v1/openapi.json";

/// The security scheme of `Authorization: Bearer <key>` (the handlers' annotations name it).
pub const BEARER: &str = "bearer";
/// The security scheme of `X-API-Key: <key>` (the handlers' annotations name it).
pub const API_KEY: &str = "api_key";

/// A key's environment (a schema only, never built).
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum EnvironmentName {
    Live,
    Test,
}

/// A key's status, for list filters (a schema only, never built).
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum StatusName {
    Active,
    Revoked,
    Expired,
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "keygate control plane",
        description = "Management API of keygate (SPEC §6, §10): tenants and their API keys. \
                       Every refusal is `{\"error\":{\"type\",\"message\"}}`; a 400 names the \
                       `field`."
    ),
    paths(
        crate::api::create_tenant,
        crate::api::create_key,
        crate::api::list_keys,
        crate::api::get_key,
        crate::api::patch_key,
        crate::api::revoke_key,
        crate::api::rotate_key,
        crate::api::me,
        crate::api::openapi_json,
    ),
    components(schemas(ErrorBody, EnvironmentName, StatusName)),
    modifiers(&Security, &Refusals),
)]
pub struct ApiDoc;

/// The JSON of the document.
pub fn json() -> Result<String, serde_json::Error> {
    ApiDoc::openapi().to_json()
}

/// Adds the two ways to present a key.
struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key: `Authorization: Bearer rk_live_…`"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            API_KEY,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "An API key in the X-API-Key header",
            ))),
        );
    }
}

/// The refusals every operation may meet (SPEC §4), where its annotation
/// does not describe them itself: the control plane's 400 and 413, the
/// filter's 401 and 403, Envoy's 413, 414, 429 and 431.
struct Refusals;

const REFUSALS: &[(&str, &str)] = &[
    ("400", "Bad input: `error.field` names the field"),
    ("401", "Missing, invalid or expired API key"),
    (
        "403",
        "The key lacks a required scope, or X-Org-Id names another organization",
    ),
    ("404", "No such thing for this caller"),
    ("413", "The body is over 64 KiB"),
    ("414", "The request target is too long"),
    ("429", "Rate limit exceeded (`retry-after`)"),
    ("431", "The request headers are too large"),
];

fn refusal(description: &str) -> RefOr<Response> {
    let schema = RefOr::Ref(Ref::from_schema_name(ErrorBody::name()));
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                utoipa::openapi::content::ContentBuilder::new()
                    .schema(Some(schema))
                    .build(),
            )
            .build(),
    )
}

fn add_refusals(operation: &mut Operation) {
    for (status, description) in REFUSALS {
        if !operation.responses.responses.contains_key(*status) {
            operation
                .responses
                .responses
                .insert((*status).to_string(), refusal(description));
        }
    }
}

impl Modify for Refusals {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        for item in doc.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.patch,
                &mut item.delete,
                &mut item.put,
            ];
            for operation in operations.into_iter().flatten() {
                add_refusals(operation);
            }
        }
    }
}
