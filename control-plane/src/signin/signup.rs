//! Who may sign up (`POST /api/v1/tenants` and the dashboard's sign-up,
//! SPEC §15): nobody when closed (`serve --signup closed`: 403, tenants
//! come from the operator API), else at most `per_hour` sign-ups per client
//! address an hour (`--signup-per-hour`), counted in the database
//! (crate::store::throttles) so every replica counts the same.

use super::throttle::{now_ms, seconds};
use crate::audit::Source;
use crate::drafts::TenantDraft;
use crate::errors::ApiError;
use crate::service::Service;
use crate::store::throttles::Rule;
use crate::store::Store;
use crate::views::{CreatedTenant, Delivered};

/// Sign-ups per address an hour by default.
pub const DEFAULT_PER_HOUR: u32 = 10;
/// The throttle rows' scope.
const SCOPE: &str = "sign_up";
const HOUR_MS: u64 = 3_600_000;

/// The sign-up settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignUp {
    /// False: every sign-up is refused (403).
    pub open: bool,
    /// Sign-ups per client address an hour.
    pub per_hour: u32,
}

impl Default for SignUp {
    fn default() -> SignUp {
        SignUp {
            open: true,
            per_hour: DEFAULT_PER_HOUR,
        }
    }
}

impl SignUp {
    /// 403 when closed.
    pub fn check_open(self) -> Result<(), ApiError> {
        if self.open {
            return Ok(());
        }
        Err(ApiError::Forbidden(
            "Sign-up is closed: tenants are created by the operator".into(),
        ))
    }

    /// Counts a sign-up from `source`: 403 when closed, 429 (with the
    /// seconds until the address's hour ends) over the limit.
    pub async fn admit(self, store: &dyn Store, source: &Source) -> Result<(), ApiError> {
        self.check_open()?;
        let rule = Rule::Window {
            limit: self.per_hour,
            window_ms: HOUR_MS,
        };
        let key = format!("address:{}", source.0);
        store
            .take(SCOPE, key, rule, now_ms())
            .await?
            .map_err(|wait| ApiError::RateLimited {
                retry_after: seconds(wait),
            })
    }

    /// Registers the tenant of `draft` from `source`: 403 when closed, 400
    /// for bad input, 429 over the address's limit (counted only for good
    /// input), else as crate::service creates it.
    pub async fn register(
        self,
        service: &Service,
        draft: TenantDraft,
        source: &Source,
    ) -> Result<Delivered<CreatedTenant>, ApiError> {
        self.check_open()?;
        let spec = draft.check()?;
        self.admit(service.store(), source).await?;
        service.create_tenant(spec).await
    }
}
