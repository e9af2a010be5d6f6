//! The control plane's own authentication of every management call, with the
//! core (defence in depth: a request that bypasses Envoy gains nothing).
//!
//! The filter's own rules and bodies, from the core (`keygate::decision`):
//! credential extraction, shape and checksum, lookup by SHA-256, then
//! revoked (here, since the filter's table holds no revoked key), expired,
//! status (a suspended tenant), `X-Org-Id`, scopes.

use crate::clock;
use crate::errors::ApiError;
use crate::service::Service;
use crate::store::KeyRecord;
use axum::http::{HeaderMap, Uri};
use keygate::credential;
use keygate::decision::{self, Deny};
use keygate::table;

/// Scopes that manage a tenant's keys.
pub const ADMIN: &[&str] = &["tenant:admin"];
/// Scopes that read a tenant's keys.
pub const READ: &[&str] = &["tenant:read", "tenant:admin"];
/// Any valid key.
pub const ANY: &[&str] = &[];

/// The caller's key, if it is valid and holds one of `any_of` and its
/// tenant is within its plan's management rate (429 otherwise).
pub async fn authenticate(
    service: &Service,
    headers: &HeaderMap,
    uri: &Uri,
    any_of: &[&str],
) -> Result<KeyRecord, ApiError> {
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .filter_map(|(name, value)| value.to_str().ok().map(|v| (name.as_str(), v)))
        .collect();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let extracted = credential::extract(&pairs, path);
    let policy = service.policy();
    let hash = decision::presented_hash(&extracted, &policy.key_prefix, policy.key_format)?;
    let record = service
        .store()
        .key_by_hash(hash)
        .await?
        .ok_or_else(Deny::invalid_key)?;
    check(&record, &pairs, any_of, clock::now()).inspect_err(|deny| {
        tracing::info!(prefix = %record.display_prefix, reason = deny.reason.as_str(), "refused");
    })?;
    service.throttle(record.org_id).await?;
    Ok(record)
}

/// The checks after the lookup: revoked, then the filter's.
fn check(
    record: &KeyRecord,
    headers: &[(&str, &str)],
    any_of: &[&str],
    now: u64,
) -> Result<(), Deny> {
    if record.revoked_at.is_some() {
        return Err(Deny::invalid_key());
    }
    decision::check_found(&as_table_key(record), headers, Some(any_of), now)
}

/// A stored key as the filter's table would hold it.
fn as_table_key(record: &KeyRecord) -> table::KeyRef<'_> {
    table::KeyRef {
        key_id: record.id,
        org_id: record.org_id,
        expires_at: record.expires_at.unwrap_or(0),
        scopes: &record.scopes,
        tier: &record.tier,
        environment: record.environment,
        status: record.status(),
        limits: record.limits,
        external_id: record.external_id.as_deref(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate::ids::{KeyId, OrgId};
    use keygate::key::Environment;

    fn record() -> KeyRecord {
        KeyRecord {
            id: KeyId(1),
            org_id: OrgId(2),
            name: "k".into(),
            display_prefix: "rk_live_abcd".into(),
            scopes: "tenant:read memory:read".into(),
            environment: Environment::Live,
            tier: "free".into(),
            created_at: 10,
            expires_at: Some(100),
            revoked_at: None,
            limits: keygate::limits::RateLimits::NONE,
            external_id: None,
            last_used_at: None,
            tenant_suspended: false,
            metadata: None,
            caps: crate::store::caps::Caps::default(),
        }
    }

    #[test]
    fn order_of_checks() {
        let r = record();
        assert_eq!(check(&r, &[], READ, 50), Ok(()));
        assert_eq!(
            check(&r, &[], ADMIN, 50),
            Err(Deny::missing_scope("tenant:admin"))
        );
        assert_eq!(check(&r, &[], ANY, 100), Err(Deny::expired()));
        let own = [("X-Org-Id", " org_0000000000000002 ")];
        assert_eq!(check(&r, &own, ANY, 50), Ok(()));
        let other = [("x-org-id", "org_x")];
        assert_eq!(check(&r, &other, ANY, 50), Err(Deny::wrong_org("org_x")));
        let revoked = KeyRecord {
            revoked_at: Some(20),
            ..r
        };
        assert_eq!(check(&revoked, &[], ANY, 200), Err(Deny::invalid_key()));
        let suspended = KeyRecord {
            tenant_suspended: true,
            ..record()
        };
        assert_eq!(check(&suspended, &[], ANY, 50), Err(Deny::org_suspended()));
    }
}
