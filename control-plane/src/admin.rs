//! Admin commands: the same key operations as the API, run on the database
//! directly, printing JSON, each change recorded in the audit log as the
//! operator's from `cli`. A running server sees their writes within about
//! 0.1 s (it re-reads the version every 100 ms).

use crate::audit::{self, Who};
use crate::cli::{KeyCommand, TenantCommand};
use crate::clock;
use crate::drafts::{KeyDraft, LimitsDraft, TenantDraft};
use crate::errors::ApiError;
use crate::service::Service;
use keygate::ids::OrgId;
use serde::Serialize;

fn pretty<T: Serialize>(value: &T) -> Result<String, ApiError> {
    serde_json::to_string_pretty(value).map_err(|_| ApiError::Internal)
}

/// Runs a tenant command; the answer is the JSON to print.
pub async fn tenant(service: &Service, command: TenantCommand) -> Result<String, ApiError> {
    match command {
        TenantCommand::Create { name, email } => {
            let draft = TenantDraft {
                name: Some(name),
                email: Some(email),
                password: None,
            };
            pretty(&service.create_tenant(draft.check()?).await?.value)
        }
        TenantCommand::SetPlan { org_id, plan } => {
            let tenant = service.set_plan(org_id, &plan, "plan").await?;
            let note = audit::plan_changed(&tenant.plan);
            service.audit(org_id, &Who::cli(), note).await;
            pretty(&tenant)
        }
        TenantCommand::Suspend { org_id } => suspend(service, org_id, true).await,
        TenantCommand::Resume { org_id } => suspend(service, org_id, false).await,
    }
}

/// Runs a key command; the answer is the JSON to print.
pub async fn key(service: &Service, command: KeyCommand) -> Result<String, ApiError> {
    match command {
        KeyCommand::Create {
            tenant,
            name,
            scopes,
            environment,
            tier,
            expires_at,
            per_minute,
            per_day,
            external_id,
        } => {
            let draft = KeyDraft {
                name: Some(name),
                scopes: Some(scopes),
                environment,
                expires_at,
                rate_limit_tier: tier,
                rate_limits: Some(LimitsDraft {
                    per_minute,
                    per_day,
                }),
                external_id,
                ..KeyDraft::default()
            };
            let spec = draft.check(service.policy(), clock::now())?;
            let created = service.create_key(tenant, spec).await?.value;
            let key = &created.key;
            let note = audit::creation(key);
            service.audit(tenant, &Who::cli(), note).await;
            pretty(&created)
        }
        KeyCommand::List { tenant } => pretty(&service.list_all(tenant).await?),
        KeyCommand::Revoke { tenant, id } => {
            let revoked = service.revoke(tenant, id).await?;
            let note = audit::revocation(&revoked.value);
            service.audit(tenant, &Who::cli(), note).await;
            pretty(&revoked)
        }
    }
}

/// Suspends (`true`) or resumes a tenant, recorded as the operator's.
async fn suspend(service: &Service, org: OrgId, suspended: bool) -> Result<String, ApiError> {
    let delivered = service.set_suspended(org, suspended).await?;
    let note = audit::suspension(suspended);
    service.audit(org, &Who::cli(), note).await;
    pretty(&delivered)
}
