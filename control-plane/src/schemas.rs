//! Schema-only types of the OpenAPI document (crate::openapi) that request
//! drafts and answers share: names the document gives a value, never built.

use utoipa::ToSchema;

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
