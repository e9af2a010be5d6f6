//! What the store keeps for leaked keys (SPEC §17): each tenant's leak
//! policy, and what the usage-spike check reads and claims (the current
//! hour's requests per key, a key's requests over a span, the last hour a
//! spike was told). Both backends implement [`LeakStore`]; every
//! [`super::Store`] is one.

use super::StoreFuture;
use keygate::ids::{KeyId, OrgId};

/// What a secret scanning report of a tenant's live key does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LeakPolicy {
    /// The key is revoked (delivered to every Envoy before the answer).
    #[default]
    Revoke,
    /// The key is left as it is; the tenant is told.
    Notify,
}

impl LeakPolicy {
    /// Every policy, by its stored and API name.
    pub const ALL: [LeakPolicy; 2] = [LeakPolicy::Revoke, LeakPolicy::Notify];

    pub fn as_str(self) -> &'static str {
        match self {
            LeakPolicy::Revoke => "revoke",
            LeakPolicy::Notify => "notify",
        }
    }

    /// The policy named `name`, if any.
    pub fn named(name: &str) -> Option<LeakPolicy> {
        LeakPolicy::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

/// A key's requests (every outcome) in one hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HourCount {
    pub key_id: KeyId,
    pub org: OrgId,
    pub requests: u64,
}

/// The leak policy and the spike check's rows.
pub trait LeakStore {
    /// The tenant's leak policy; `None` for no such tenant.
    fn leak_policy(&self, org: OrgId) -> StoreFuture<'_, Option<LeakPolicy>>;

    /// Sets the tenant's leak policy; `false` for no such tenant.
    fn set_leak_policy(&self, org: OrgId, policy: LeakPolicy) -> StoreFuture<'_, bool>;

    /// The unrevoked keys with at least `min` requests in the hour starting
    /// at `hour` whose spike of that hour was not told yet.
    fn busy_keys(&self, hour: u64, min: u64) -> StoreFuture<'_, Vec<HourCount>>;

    /// A key's requests (every outcome) in `[from, to)`, from minute and
    /// hourly rows.
    fn requests_between(&self, key: KeyId, from: u64, to: u64) -> StoreFuture<'_, u64>;

    /// Records `hour` as the key's last spike hour unless it (or a later
    /// one) already is; `true` when it was recorded now.
    fn claim_spike(&self, key: KeyId, hour: u64) -> StoreFuture<'_, bool>;
}
