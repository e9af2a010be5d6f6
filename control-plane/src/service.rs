//! The key operations behind both the API and the admin CLI: mint (with the
//! core's generator), get, list, patch, revoke and rotate, always within one
//! tenant and its plan; and the operator's tenant operations (list, get, set
//! plan, suspend).
//!
//! A change of what the filter knows answers only once it was handed to
//! every Envoy connected to this replica's feed, or the propagation timeout
//! passed ([`Service::delivered`], crate::delivery): one that takes rights
//! away (a revocation, a rotation without grace, a narrowing patch, a
//! suspension), so that it holds, and one that gives them (a new tenant's
//! key, a created or rotated key, a widening patch, a resumption, a usage
//! reset), so that the key works everywhere when the answer arrives
//! (SPEC §16).

use crate::clock;
use crate::delivery::Delivery;
use crate::drafts::{KeySpec, TenantSpec};
use crate::egress::Egress;
use crate::errors::ApiError;
use crate::hashing::Hashing;
use crate::leaks::LeakWatch;
use crate::listing;
use crate::plans::{Plan, Plans};
use crate::policy::MintPolicy;
use crate::store::accounts::PasswordSet;
use crate::store::caps::{Caps, CapsChange};
use crate::store::{
    KeyPatch, KeyQuery, KeyRecord, NewKey, OldKeyFate, Patched, Store, StoreError, StoreFuture,
    Tenant, TenantPage,
};
use crate::throttle::Throttle;
use crate::views::{
    CreatedKey, CreatedTenant, Delivered, KeyList, KeyView, RotatedKey, Suspension, TenantView,
    SHOW_ONCE,
};
use keygate::ids::{KeyId, OrgId};
use keygate::key::{self, Environment, KeyError};
use keygate::limits::RateLimits;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Notify;
use tracing::info;

/// Name of the key a new tenant gets.
const FIRST_KEY_NAME: &str = "Default key";
/// Tries with fresh random ids before giving up on duplicates.
const ID_ATTEMPTS: usize = 4;

/// Key operations on a store under a policy.
pub struct Service {
    store: Arc<dyn Store>,
    policy: MintPolicy,
    plans: Plans,
    throttle: Throttle,
    /// The bound on password hashes at once (crate::password).
    hashing: Hashing,
    delivery: Arc<Delivery>,
    /// Woken when webhook deliveries were queued (crate::dispatch).
    events_queued: Arc<Notify>,
    /// Where webhooks may point (crate::egress).
    egress: Arc<Egress>,
    /// Secret scanning keys and the spike rule (crate::leaks).
    leak_watch: Arc<LeakWatch>,
}

/// A freshly generated key, before it is stored.
struct Minted {
    key: String,
    new: NewKey,
}

/// The 409 of a password for an email another tenant signs in with.
pub fn email_taken() -> ApiError {
    ApiError::Conflict(
        "Another organization already signs in to the dashboard with this email".into(),
    )
}

fn random_failed(e: KeyError) -> ApiError {
    tracing::error!(error = %e, "cannot generate a key");
    ApiError::Internal
}

/// Runs `attempt` again, with fresh random ids, while it hits a duplicate.
async fn with_fresh_ids<T, F, Fut>(mut attempt: F) -> Result<T, ApiError>
where
    F: FnMut() -> Result<Fut, ApiError>,
    Fut: Future<Output = Result<T, StoreError>>,
{
    for _ in 0..ID_ATTEMPTS {
        match attempt()?.await {
            Err(StoreError::Duplicate) => continue,
            other => return other.map_err(ApiError::from),
        }
    }
    Err(StoreError::Duplicate.into())
}

impl Service {
    pub fn new(
        store: Arc<dyn Store>,
        policy: MintPolicy,
        plans: Plans,
        delivery: Arc<Delivery>,
    ) -> Service {
        Service {
            store,
            policy,
            plans,
            throttle: Throttle::default(),
            hashing: Hashing::default(),
            delivery,
            events_queued: Arc::default(),
            egress: Arc::default(),
            leak_watch: Arc::default(),
        }
    }

    /// This service, taking secret scanning reports and looking for usage
    /// spikes as `watch` says (default: no reports taken).
    pub fn with_leak_watch(mut self, watch: LeakWatch) -> Service {
        self.leak_watch = Arc::new(watch);
        self
    }

    /// How leaked keys are found (crate::leaks).
    pub fn leak_watch(&self) -> &LeakWatch {
        &self.leak_watch
    }

    /// This service, with webhooks limited by `egress` (default: public
    /// addresses only).
    pub fn with_egress(mut self, egress: Egress) -> Service {
        self.egress = Arc::new(egress);
        self
    }

    /// Where webhooks may point.
    pub fn egress(&self) -> &Arc<Egress> {
        &self.egress
    }

    /// This service with `hashing` as its bound on password hashes.
    pub fn with_hashing(self, hashing: Hashing) -> Service {
        Service { hashing, ..self }
    }

    /// The bound on password hashes at once.
    pub fn hashing(&self) -> &Hashing {
        &self.hashing
    }

    pub fn plans(&self) -> &Plans {
        &self.plans
    }

    /// The plan `org` is on now (404 for no such tenant).
    pub async fn plan_of(&self, org: OrgId) -> Result<&Plan, ApiError> {
        let tenant = self.store.tenant(org).await?;
        let tenant = tenant.ok_or(ApiError::NotFound("Tenant"))?;
        Ok(self.plan_named(&tenant.plan))
    }

    /// The plan a tenant stored with plan `name` is on: that plan, or the
    /// default one for `""` (migrated from before plans) or a plan the plans
    /// file lacks (which the start warns about).
    fn plan_named(&self, name: &str) -> &Plan {
        self.plans
            .get(name)
            .unwrap_or_else(|| self.plans.default_plan())
    }

    /// Takes one management call of `org` from its plan's bucket; over the
    /// rate, 429 with `retry-after`.
    pub async fn throttle(&self, org: OrgId) -> Result<(), ApiError> {
        let rate = self.plan_of(org).await?.management;
        self.throttle
            .take(org, rate, Instant::now())
            .map_err(|retry_after| ApiError::RateLimited { retry_after })
    }

    /// The Envoys of this replica's feed and what they acknowledged.
    pub fn delivery(&self) -> &Arc<Delivery> {
        &self.delivery
    }

    /// `value`, once every write committed so far reached every Envoy
    /// connected now (or the propagation timeout passed): for answers to
    /// changes of what the filter knows.
    async fn delivered<T>(&self, value: T) -> Delivered<T> {
        let version = *self.store.version().borrow();
        let propagated = self.delivery.wait(version).await;
        Delivered {
            value,
            propagated: Some(propagated),
        }
    }

    /// Woken when webhook deliveries were queued.
    pub fn events_queued(&self) -> &Arc<Notify> {
        &self.events_queued
    }

    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// The store, to share with a background task.
    pub fn shared_store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }

    pub fn policy(&self) -> &MintPolicy {
        &self.policy
    }

    /// A new key of `org` as `spec` says, holding `scopes` (space-separated).
    fn mint(&self, org: OrgId, spec: &KeySpec, scopes: &str, now: u64) -> Result<Minted, ApiError> {
        let key = self
            .policy
            .key_format
            .generate(&self.policy.key_prefix, spec.environment)
            .map_err(random_failed)?;
        let record = KeyRecord {
            id: KeyId::random().map_err(random_failed)?,
            org_id: org,
            name: spec.name.clone(),
            display_prefix: key::display_prefix(&key).to_string(),
            scopes: scopes.to_string(),
            environment: spec.environment,
            tier: spec.tier.clone(),
            created_at: now,
            expires_at: spec.expires_at,
            revoked_at: None,
            limits: spec.limits,
            external_id: spec.external_id.clone(),
            tenant_suspended: false,
            metadata: spec.metadata.clone(),
            last_used_at: None,
            caps: spec.caps,
        };
        let new = NewKey {
            hash: key::hash(&key),
            record,
        };
        Ok(Minted { key, new })
    }

    /// Creates a tenant and its first key, which holds every allowed scope,
    /// and its dashboard password if given (409 if another tenant signs in
    /// with that email); answers once the key is delivered.
    pub async fn create_tenant(
        &self,
        spec: TenantSpec,
    ) -> Result<Delivered<CreatedTenant>, ApiError> {
        let password_hash = match spec.password.clone() {
            Some(password) => Some(password.hash(&self.hashing).await?),
            None => None,
        };
        let now = clock::now();
        let all_scopes = self.policy.all_scopes();
        let first = KeySpec {
            name: FIRST_KEY_NAME.into(),
            scopes: Some(all_scopes.clone()),
            environment: Environment::Live,
            expires_at: None,
            tier: self.policy.default_tier().into(),
            limits: RateLimits::NONE,
            external_id: None,
            metadata: None,
            caps: Caps::default(),
        };
        let created = with_fresh_ids(|| {
            let org = OrgId::random().map_err(random_failed)?;
            let tenant = Tenant {
                id: org,
                name: spec.name.clone(),
                email: spec.email.clone(),
                created_at: now,
                plan: self.plans.default_plan().name.clone(),
                suspended: false,
            };
            let Minted { key, new } = self.mint(org, &first, &all_scopes, now)?;
            let answer = CreatedTenant {
                tenant_id: org,
                key_id: new.record.id,
                api_key_prefix: new.record.display_prefix.clone(),
                api_key: key,
                message: SHOW_ONCE,
            };
            let stored: StoreFuture<'_, PasswordSet> = match password_hash.clone() {
                None => {
                    let stored = self.store.create_tenant(tenant, new);
                    Box::pin(async move { stored.await.map(|()| PasswordSet::Set) })
                }
                Some(hash) => self.store.create_tenant_with_password(tenant, new, hash),
            };
            Ok(async move {
                stored
                    .await
                    .map(|set| (set == PasswordSet::Set).then_some(answer))
            })
        })
        .await?
        .ok_or_else(email_taken)?;
        info!(org_id = %created.tenant_id, key_id = %created.key_id,
              prefix = %created.api_key_prefix, "tenant created");
        Ok(self.delivered(created).await)
    }

    /// Mints a key for `org`, within its plan (403 otherwise), holding the
    /// scopes asked or, without, the plan's default key scopes; answers
    /// once the key is delivered.
    pub async fn create_key(
        &self,
        org: OrgId,
        spec: KeySpec,
    ) -> Result<Delivered<CreatedKey>, ApiError> {
        let plan = self.plan_of(org).await?;
        plan.check_tier(&spec.tier)?;
        check_limits(plan, spec.limits)?;
        let scopes = match &spec.scopes {
            Some(scopes) => scopes.clone(),
            None => plan.default_key_scopes(&self.policy),
        };
        let now = clock::now();
        let created = with_fresh_ids(|| {
            let Minted { key, new } = self.mint(org, &spec, &scopes, now)?;
            let view = KeyView::from(&new.record);
            let stored = self.store.create_key(new);
            Ok(async move {
                stored.await.map(|()| CreatedKey {
                    api_key: key,
                    key: view,
                })
            })
        })
        .await?;
        log_key("api key created", org, &created.key);
        Ok(self.delivered(created).await)
    }

    /// One key of `org`.
    pub async fn get(&self, org: OrgId, id: KeyId) -> Result<KeyView, ApiError> {
        let record = self.store.key(org, id).await?;
        Ok(KeyView::from(&record.ok_or(ApiError::NotFound("API key"))?))
    }

    /// One page of the keys of `org`.
    pub async fn list(&self, org: OrgId, query: KeyQuery) -> Result<KeyList, ApiError> {
        let page = self.store.list_page(org, query).await?;
        Ok(KeyList {
            data: page.keys.iter().map(KeyView::from).collect(),
            next_cursor: page.next_after.map(listing::cursor),
        })
    }

    /// Every key of `org`, page by page (the admin CLI).
    pub async fn list_all(&self, org: OrgId) -> Result<KeyList, ApiError> {
        let mut query = KeyQuery {
            after: None,
            limit: listing::MAX_LIMIT,
            environment: None,
            status: None,
            external_id: None,
            now: clock::now(),
        };
        let mut data = Vec::new();
        loop {
            let page = self.store.list_page(org, query.clone()).await?;
            data.extend(page.keys.iter().map(KeyView::from));
            match page.next_after {
                Some(after) => query.after = Some(after),
                None => {
                    return Ok(KeyList {
                        data,
                        next_cursor: None,
                    })
                }
            }
        }
    }

    /// Whether the plan of `org` allows `patch` (its tier and its own
    /// limits), checked before the write: 403 naming the field otherwise.
    async fn plan_allows(&self, org: OrgId, patch: &KeyPatch) -> Result<(), ApiError> {
        if patch.tier.is_none() && patch.limits.is_none() {
            return Ok(());
        }
        let plan = self.plan_of(org).await?;
        if let Some(tier) = &patch.tier {
            plan.check_tier(tier)?;
        }
        patch
            .limits
            .map_or(Ok(()), |limits| check_limits(plan, limits))
    }

    /// Applies a checked `patch` to an active key of `org` in one write; a
    /// change of what the filter knows (scopes, tier, expiry) is delivered
    /// before the answer. A revoked or expired key is a 409.
    pub async fn patch(
        &self,
        org: OrgId,
        id: KeyId,
        patch: KeyPatch,
    ) -> Result<Delivered<KeyView>, ApiError> {
        self.plan_allows(org, &patch).await?;
        let patched = self.store.patch_key(org, id, patch, clock::now()).await?;
        let Patched {
            record,
            feed_changed,
        } = patched.ok_or(ApiError::NotFound("API key"))?;
        let view = KeyView::from(&record);
        log_key("api key patched", org, &view);
        Ok(if feed_changed {
            self.delivered(view).await
        } else {
            Delivered {
                value: view,
                propagated: None,
            }
        })
    }

    /// Zeroes what the quota and spending cap of an active key of `org`
    /// used in their current period (`POST …/usage/reset`); a key that was
    /// exhausted comes back within the revocation bound (the answer waits
    /// for delivery).
    pub async fn reset_usage(&self, org: OrgId, id: KeyId) -> Result<Delivered<KeyView>, ApiError> {
        let reset = CapsChange {
            reset: true,
            now: clock::now(),
            ..CapsChange::default()
        };
        let patch = KeyPatch {
            caps: Some(reset),
            ..KeyPatch::default()
        };
        self.patch(org, id, patch).await
    }

    /// Revokes a key of `org` (again: no change, but still delivered: an
    /// earlier revocation may not have reached every Envoy yet).
    pub async fn revoke(&self, org: OrgId, id: KeyId) -> Result<Delivered<KeyView>, ApiError> {
        let was_revoked = self.store.key(org, id).await?.and_then(|k| k.revoked_at);
        let record = self.store.revoke_key(org, id, clock::now()).await?;
        let view = KeyView::from(&record.ok_or(ApiError::NotFound("API key"))?);
        log_key("api key revoked", org, &view);
        if was_revoked.is_none() {
            self.emit_key_revoked(org, &view).await;
        }
        Ok(self.delivered(view).await)
    }

    /// Suspends (`true`) or resumes `org`: its keys get (or lose) the
    /// status `org_suspended` in the key table. Delivered either way (a
    /// resume gives rights back, but the caller may check it as well).
    pub async fn set_suspended(
        &self,
        org: OrgId,
        suspended: bool,
    ) -> Result<Delivered<Suspension>, ApiError> {
        let changed = self.store.set_suspended(org, suspended).await?;
        let keys_changed = changed.ok_or(ApiError::NotFound("Tenant"))?;
        info!(org_id = %org, suspended, keys = keys_changed, "tenant suspension set");
        let answer = Suspension {
            tenant_id: org,
            suspended,
            keys_changed,
        };
        Ok(self.delivered(answer).await)
    }

    /// Replaces a key of `org` by a new one with the same name, scopes,
    /// environment, tier, limits, owner, expiry and metadata; the old key dies now (`grace` 0) or
    /// `grace` seconds from now. The answer is delivered (the new key, and
    /// without grace the old key's end).
    pub async fn rotate(
        &self,
        org: OrgId,
        id: KeyId,
        grace: u64,
    ) -> Result<Delivered<RotatedKey>, ApiError> {
        let now = clock::now();
        let old = self.store.key(org, id).await?;
        let old = old.ok_or(ApiError::NotFound("API key"))?;
        self.plan_of(org).await?.check_tier(&old.tier)?;
        let scopes = old.scopes;
        let spec = KeySpec {
            name: old.name,
            scopes: Some(scopes.clone()),
            environment: old.environment,
            expires_at: old.expires_at,
            tier: old.tier,
            limits: old.limits,
            external_id: old.external_id,
            metadata: old.metadata,
            caps: old.caps,
        };
        let fate = match grace {
            0 => OldKeyFate::RevokeAt(now),
            _ => OldKeyFate::ExpireAt(now.saturating_add(grace)),
        };
        let rotated = with_fresh_ids(|| {
            let Minted { key, new } = self.mint(org, &spec, &scopes, now)?;
            let view = KeyView::from(&new.record);
            let stored = self.store.rotate_key(org, id, new, fate, now);
            Ok(async move {
                stored.await.map(|previous| {
                    previous.map(|previous| RotatedKey {
                        created: CreatedKey {
                            api_key: key,
                            key: view,
                        },
                        previous_key: KeyView::from(&previous),
                    })
                })
            })
        })
        .await?
        .ok_or(ApiError::NotFound("API key"))?;
        log_key("api key rotated, new key", org, &rotated.created.key);
        log_key("api key rotated, old key", org, &rotated.previous_key);
        if let OldKeyFate::RevokeAt(_) = fate {
            self.emit_key_revoked(org, &rotated.previous_key).await;
        }
        Ok(self.delivered(rotated).await)
    }
}

/// Operator operations on tenants (SPEC §10), whatever their plan.
impl Service {
    fn tenant_view(&self, tenant: Tenant) -> TenantView {
        let plan = self.plan_named(&tenant.plan).name.clone();
        TenantView::new(tenant, plan)
    }

    /// A page of tenants in id order, after `page.after`.
    pub async fn tenants(&self, page: TenantPage) -> Result<Vec<TenantView>, ApiError> {
        let tenants = self.store.list_tenants(page).await?;
        Ok(tenants.into_iter().map(|t| self.tenant_view(t)).collect())
    }

    /// One tenant.
    pub async fn tenant(&self, org: OrgId) -> Result<TenantView, ApiError> {
        let tenant = self.store.tenant(org).await?;
        Ok(self.tenant_view(tenant.ok_or(ApiError::NotFound("Tenant"))?))
    }

    /// Puts `org` on the plan `plan` (400 naming `field` if there is none).
    pub async fn set_plan(
        &self,
        org: OrgId,
        plan: &str,
        field: &str,
    ) -> Result<TenantView, ApiError> {
        let plan = self.plans.named(plan, field)?.name.clone();
        let tenant = self.store.set_plan(org, plan.clone()).await?;
        let tenant = tenant.ok_or(ApiError::NotFound("Tenant"))?;
        info!(org_id = %org, plan, "tenant plan set");
        Ok(self.tenant_view(tenant))
    }

    /// Warns about every plan a tenant has that the plans file lacks: those
    /// tenants get the default plan until the operator sets one.
    pub async fn warn_unknown_plans(&self) -> Result<(), ApiError> {
        for plan in self.store.plans_in_use().await? {
            if !plan.is_empty() && !self.plans.contains(&plan) {
                tracing::warn!(plan, default = %self.plans.default_plan().name,
                               "tenants are on a plan the plans file lacks: the default plan \
                                applies to them until `tenant set-plan`");
            }
        }
        Ok(())
    }
}

fn log_key(event: &str, org: OrgId, key: &KeyView) {
    info!(org_id = %org, key_id = %key.id, prefix = %key.api_key_prefix,
          expires_at = key.expires_at.as_deref().unwrap_or("never"), "{event}");
}

/// Whether `plan` allows a key's own `limits` (0: no limit of its own).
fn check_limits(plan: &Plan, limits: RateLimits) -> Result<(), ApiError> {
    let asked = |v: u32| (v > 0).then_some(u64::from(v));
    plan.check_limits(asked(limits.per_minute), asked(limits.per_day))
}
