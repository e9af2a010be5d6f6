//! The OpenAPI 3.1 document of the management API, generated from the
//! handlers' path annotations (crate::api, crate::webhooks, crate::audit)
//! crate::leaks) and the request and response types (crate::drafts, crate::views,
//! crate::errors), served by its own route at [`PATH`]. Every operation
//! also lists the refusals of SPEC §4 it can meet on its way through Envoy
//! and the control plane ([`Refusals`]), and the served document names this
//! deployment's scopes and tiers ([`json`]).

use crate::errors::{ApiError, ErrorBody};
use crate::policy::MintPolicy;
use crate::schemas::{EnvironmentName, StatusName};
use crate::state::AppState;
use axum::extract::State;
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::get;
use axum::Router;
use serde_json::Value;
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

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "keygate control plane",
        description = "Management API of keygate (SPEC §6, §10, §11): tenants, their API keys, their usage, webhooks and audit log. \
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
        crate::api::key_usage,
        crate::api::reset_usage,
        crate::api::tenant_usage,
        crate::api::me,
        crate::api::set_password,
        openapi_json,
        crate::webhooks::create,
        crate::webhooks::list,
        crate::webhooks::remove,
        crate::webhooks::deliveries,
        crate::audit::audit_log,
        crate::leaks::report::report,
        crate::leaks::settings::read,
        crate::leaks::settings::change,
    ),
    components(schemas(ErrorBody, EnvironmentName, StatusName, crate::audit::ActionName)),
    modifiers(&Security, &Refusals),
)]
pub struct ApiDoc;

/// The route of the document.
pub fn routes() -> Router<AppState> {
    Router::new().route(PATH, get(openapi_json))
}

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
async fn openapi_json(State(state): State<AppState>) -> Result<HttpResponse, ApiError> {
    let document = json(state.service.policy()).map_err(|e| {
        tracing::error!(error = %e, "cannot encode the OpenAPI document");
        ApiError::Internal
    })?;
    let mut response = document.into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// Where the request schemas take a scope or a tier (JSON pointers), and
/// whether `null` is allowed there too.
const SCOPE_ITEMS: &[&str] = &[
    "/components/schemas/CreateKey/properties/scopes/items",
    "/components/schemas/PatchKey/properties/scopes/items",
];
const TIERS: &[(&str, bool)] = &[
    (
        "/components/schemas/CreateKey/properties/rate_limit_tier",
        true,
    ),
    (
        "/components/schemas/PatchKey/properties/rate_limit_tier",
        false,
    ),
];

/// The JSON of the document, with the scopes and tiers `policy` allows as
/// the enums of the request fields that take them.
pub fn json(policy: &MintPolicy) -> Result<String, serde_json::Error> {
    let mut doc = serde_json::to_value(ApiDoc::openapi())?;
    let names = |items: &[String], null: bool| {
        let mut values: Vec<Value> = items.iter().cloned().map(Value::String).collect();
        if null {
            values.push(Value::Null);
        }
        Value::Array(values)
    };
    for pointer in SCOPE_ITEMS {
        set_enum(&mut doc, pointer, names(&policy.scopes, false));
    }
    for (pointer, null) in TIERS {
        set_enum(&mut doc, pointer, names(&policy.tiers, *null));
    }
    serde_json::to_string(&doc)
}

fn set_enum(doc: &mut Value, pointer: &str, values: Value) {
    match doc.pointer_mut(pointer).and_then(Value::as_object_mut) {
        Some(schema) => {
            schema.insert("enum".into(), values);
        }
        None => tracing::error!(pointer, "the OpenAPI document has no such schema"),
    }
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
/// filter's 401, 402 and 403, Envoy's 413, 414, 429 and 431.
struct Refusals;

const REFUSALS: &[(&str, &str)] = &[
    ("400", "Bad input: `error.field` names the field"),
    ("401", "Missing, invalid or expired API key"),
    ("402", "The key's spending cap or request quota is used up"),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> MintPolicy {
        MintPolicy::example()
    }

    #[test]
    fn every_management_route_is_described_with_its_refusals() {
        let doc: Value = serde_json::from_str(&json(&policy()).unwrap()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let operations = [
            ("/api/v1/tenants", "post"),
            ("/api/v1/api-keys", "post"),
            ("/api/v1/api-keys", "get"),
            ("/api/v1/api-keys/{id}", "get"),
            ("/api/v1/api-keys/{id}", "patch"),
            ("/api/v1/api-keys/{id}", "delete"),
            ("/api/v1/api-keys/{id}/rotate", "post"),
            ("/api/v1/api-keys/{id}/usage", "get"),
            ("/api/v1/api-keys/{id}/usage/reset", "post"),
            ("/api/v1/usage", "get"),
            ("/api/v1/auth/me", "get"),
            ("/api/v1/auth/me/password", "put"),
            (PATH, "get"),
            ("/api/v1/webhooks", "post"),
            ("/api/v1/webhooks", "get"),
            ("/api/v1/webhooks/{id}", "delete"),
            ("/api/v1/webhooks/{id}/deliveries", "get"),
            ("/api/v1/audit-log", "get"),
            ("/api/v1/secret-scanning", "post"),
            ("/api/v1/tenant/settings", "get"),
            ("/api/v1/tenant/settings", "patch"),
        ];
        let paths = doc["paths"].as_object().unwrap();
        let described: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
        assert_eq!(described, operations.len());
        for (path, method) in operations {
            let responses = &doc["paths"][path][method]["responses"];
            for (status, _) in REFUSALS {
                assert!(
                    responses[*status].is_object(),
                    "{method} {path} lacks {status}"
                );
            }
        }
        let scopes = &doc["components"]["schemas"]["PatchKey"]["properties"]["scopes"]["items"];
        assert_eq!(scopes["enum"], serde_json::json!(["a:read", "a:write"]));
        let tier = &doc["components"]["schemas"]["CreateKey"]["properties"]["rate_limit_tier"];
        assert_eq!(tier["enum"], serde_json::json!(["free", "pro", null]));
        let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
        assert!(schemes.contains_key(BEARER) && schemes.contains_key(API_KEY));
        assert!(doc["paths"]["/api/v1/api-keys"]["get"]["security"].is_array());
    }

    /// Every `$ref` under `value`.
    fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(fields) => {
                out.extend(fields.get("$ref").and_then(Value::as_str));
                fields.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves() {
        let doc: Value = serde_json::from_str(&json(&policy()).unwrap()).unwrap();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.contains(&"#/components/schemas/Granularity"));
        assert!(found.contains(&"#/components/schemas/Quota"));
        assert!(found.contains(&"#/components/schemas/SpendCapView"));
        for reference in found {
            let pointer = reference.trim_start_matches('#');
            assert!(
                doc.pointer(pointer).is_some(),
                "{reference} is not in the document"
            );
        }
    }
}
