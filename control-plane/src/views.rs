//! The JSON shapes the control plane answers with (and the OpenAPI
//! document's response schemas). A full key appears only in the answer that
//! creates it; a hash never appears.

use crate::caps::{QuotaView, SpendCapView};
use crate::clock;
use crate::delivery::Propagated;
use crate::schemas::EnvironmentName;
use crate::store::{KeyRecord, Metadata, Tenant};
use keygate::ids::{KeyId, OrgId};
use keygate::key::Environment;
use keygate::limits::RateLimits;
use serde::Serialize;
use utoipa::ToSchema;

/// What the creator of a tenant or key is told about the key.
pub const SHOW_ONCE: &str = "Store this API key now; it will not be shown again.";

/// A key as listed: never the key or its hash.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Key)]
pub struct KeyView {
    #[schema(value_type = String, example = "key_00c0ffee00c0ffee")]
    pub id: KeyId,
    pub name: String,
    /// The first 12 characters of the key.
    pub api_key_prefix: String,
    pub scopes: Vec<String>,
    #[schema(value_type = EnvironmentName)]
    pub environment: Environment,
    pub rate_limit_tier: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    #[schema(format = DateTime)]
    pub revoked_at: Option<String>,
    /// The key's own limits on top of its tier's; `null` when it has none.
    pub rate_limits: Option<LimitsView>,
    /// The key's owner (forwarded upstream as `x-key-owner`).
    pub external_id: Option<String>,
    /// The caller's JSON object, if set.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Metadata>,
    /// The latest minute with allowed requests (accurate to one usage
    /// batch interval); `null` before the first.
    #[schema(format = DateTime)]
    pub last_used_at: Option<String>,
    /// The request quota and what it used in the current period.
    pub quota: Option<QuotaView>,
    /// The spending cap and what it used in the current period.
    pub spend_cap: Option<SpendCapView>,
}

/// A key's own rate limits; an absent limit is `null`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, ToSchema)]
pub struct LimitsView {
    pub per_minute: Option<u32>,
    pub per_day: Option<u32>,
}

impl LimitsView {
    /// The view of `limits`; `None` when the key has none.
    pub fn of(limits: RateLimits) -> Option<LimitsView> {
        let set = |v: u32| (v > 0).then_some(v);
        (!limits.is_none()).then_some(LimitsView {
            per_minute: set(limits.per_minute),
            per_day: set(limits.per_day),
        })
    }
}

impl From<&KeyRecord> for KeyView {
    fn from(r: &KeyRecord) -> KeyView {
        KeyView {
            id: r.id,
            name: r.name.clone(),
            api_key_prefix: r.display_prefix.clone(),
            scopes: r.scopes.split_whitespace().map(str::to_string).collect(),
            environment: r.environment,
            rate_limit_tier: r.tier.clone(),
            created_at: clock::rfc3339(r.created_at),
            expires_at: r.expires_at.map(clock::rfc3339),
            revoked_at: r.revoked_at.map(clock::rfc3339),
            rate_limits: LimitsView::of(r.limits),
            external_id: r.external_id.clone(),
            metadata: r.metadata.clone(),
            last_used_at: r.last_used_at.map(clock::rfc3339),
            quota: QuotaView::of(&r.caps, clock::now()),
            spend_cap: SpendCapView::of(&r.caps, clock::now()),
        }
    }
}

/// A new key, shown once.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedKey {
    pub api_key: String,
    #[serde(flatten)]
    pub key: KeyView,
}

/// The key a rotation made, and the old key as it now is.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RotatedKey {
    #[serde(flatten)]
    pub created: CreatedKey,
    pub previous_key: KeyView,
}

/// The answer to a change that takes rights away, and how far it went
/// before the answer (absent for changes that need no delivery).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Delivered<T> {
    #[serde(flatten)]
    pub value: T,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub propagated: Option<Propagated>,
}

/// A new tenant and its first key, shown once.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedTenant {
    #[schema(value_type = String, example = "org_00c0ffee00c0ffee")]
    pub tenant_id: OrgId,
    #[schema(value_type = String)]
    pub key_id: KeyId,
    pub api_key: String,
    pub api_key_prefix: String,
    pub message: &'static str,
}

/// `GET /api/v1/auth/me`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Me {
    #[schema(value_type = String)]
    pub tenant_id: OrgId,
    pub key: KeyView,
}

/// A tenant's suspension, as set by the operator.
#[derive(Debug, Clone, Serialize)]
pub struct Suspension {
    pub tenant_id: OrgId,
    pub suspended: bool,
    /// Keys whose status in the key table changed.
    pub keys_changed: usize,
}

/// `GET /api/v1/api-keys`: a page of keys in creation order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyList {
    pub data: Vec<KeyView>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// A tenant as the operator sees it (`/operator/v1/tenants`).
#[derive(Debug, Clone, Serialize)]
pub struct TenantView {
    pub id: OrgId,
    pub name: String,
    pub email: String,
    /// Its plan (a stored plan the plans file lacks shows the default one).
    pub plan: String,
    /// Suspended by the operator: its keys are refused (403).
    pub suspended: bool,
    pub created_at: String,
}

impl TenantView {
    /// `tenant`, on the plan `plan` it is under now.
    pub fn new(tenant: Tenant, plan: String) -> TenantView {
        TenantView {
            id: tenant.id,
            name: tenant.name,
            email: tenant.email,
            plan,
            suspended: tenant.suspended,
            created_at: clock::rfc3339(tenant.created_at),
        }
    }
}

/// `GET /operator/v1/tenants`: a page and the cursor of the next one.
#[derive(Debug, Clone, Serialize)]
pub struct TenantList {
    pub data: Vec<TenantView>,
    pub next_cursor: Option<String>,
}

/// The answer to setting a dashboard password.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PasswordSetView {
    #[schema(value_type = String, example = "org_00c0ffee00c0ffee")]
    pub tenant_id: OrgId,
    /// The email to sign in with.
    pub email: String,
    pub message: &'static str,
}
