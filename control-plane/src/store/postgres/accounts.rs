//! The dashboard accounts and sessions of the PostgreSQL store
//! (crate::store::accounts): writes in one transaction each, reads on a
//! pooled connection.

use super::queries::{self, id_of, int, sql_id, Write};
use super::{connection, PostgresStore};
use crate::store::accounts::{Account, Accounts, NewSession, PasswordSet};
use crate::store::{NewKey, StoreError, StoreFuture, Tenant};
use keygate::ids::OrgId;

/// Whether a tenant other than `org` signs in with `email`.
async fn email_taken(w: &Write<'_>, email: &str, org: OrgId) -> Result<bool, StoreError> {
    let other =
        w.tx.query_opt(
            "SELECT tenant_id FROM dashboard_accounts WHERE email = $1",
            &[&email],
        )
        .await?;
    Ok(match other {
        Some(row) => row.try_get::<_, i64>(0)? != sql_id(org.0),
        None => false,
    })
}

/// Sets the password of `org` unless the email is another's; ends its sessions.
async fn upsert(
    w: &Write<'_>,
    org: OrgId,
    email: &str,
    hash: &str,
    now: u64,
) -> Result<PasswordSet, StoreError> {
    if email_taken(w, email, org).await? {
        return Ok(PasswordSet::EmailTaken);
    }
    w.tx.execute(
        "INSERT INTO dashboard_accounts (tenant_id, email, password_hash, updated_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id) DO UPDATE SET \
         email = excluded.email, password_hash = excluded.password_hash, \
         updated_at = excluded.updated_at",
        &[&sql_id(org.0), &email, &hash, &int(now)?],
    )
    .await?;
    w.tx.execute(
        "DELETE FROM dashboard_sessions WHERE tenant_id = $1",
        &[&sql_id(org.0)],
    )
    .await?;
    Ok(PasswordSet::Set)
}

impl Accounts for PostgresStore {
    fn create_tenant_with_password(
        &self,
        tenant: Tenant,
        first_key: NewKey,
        password_hash: String,
    ) -> StoreFuture<'_, PasswordSet> {
        Box::pin(self.write(move |w| {
            Box::pin(async move {
                let email = tenant.email.to_lowercase();
                if email_taken(w, &email, tenant.id).await? {
                    return Ok(PasswordSet::EmailTaken);
                }
                queries::insert_tenant(w, &tenant).await?;
                queries::insert_key(w, &first_key).await?;
                upsert(w, tenant.id, &email, &password_hash, tenant.created_at).await
            })
        }))
    }

    fn set_password(
        &self,
        org: OrgId,
        email: String,
        password_hash: String,
        now: u64,
    ) -> StoreFuture<'_, PasswordSet> {
        Box::pin(self.write(move |w| {
            Box::pin(
                async move { upsert(w, org, &email.to_lowercase(), &password_hash, now).await },
            )
        }))
    }

    fn account(&self, email: String) -> StoreFuture<'_, Option<Account>> {
        Box::pin(async move {
            let client = connection(&self.inner.pool).await?;
            let row = client
                .query_opt(
                    "SELECT tenant_id, password_hash FROM dashboard_accounts WHERE email = $1",
                    &[&email.to_lowercase()],
                )
                .await?;
            row.map(|row| {
                Ok(Account {
                    org: OrgId(id_of(&row, 0)?),
                    password_hash: row.try_get(1)?,
                })
            })
            .transpose()
        })
    }

    fn create_session(&self, session: NewSession) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |w| {
            Box::pin(async move {
                let created = int(session.created_at)?;
                w.tx.execute(
                    "DELETE FROM dashboard_sessions WHERE expires_at <= $1",
                    &[&created],
                )
                .await?;
                w.tx.execute(
                    "INSERT INTO dashboard_sessions (id_hash, tenant_id, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4)",
                    &[
                        &session.id_hash.as_slice(),
                        &sql_id(session.org.0),
                        &created,
                        &int(session.expires_at)?,
                    ],
                )
                .await?;
                Ok(())
            })
        }))
    }

    fn session(&self, id_hash: [u8; 32], now: u64) -> StoreFuture<'_, Option<OrgId>> {
        Box::pin(async move {
            let client = connection(&self.inner.pool).await?;
            let row = client
                .query_opt(
                    "SELECT tenant_id FROM dashboard_sessions \
                     WHERE id_hash = $1 AND expires_at > $2",
                    &[&id_hash.as_slice(), &int(now)?],
                )
                .await?;
            row.map(|row| id_of(&row, 0).map(OrgId)).transpose()
        })
    }

    fn end_session(&self, id_hash: [u8; 32]) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |w| {
            Box::pin(async move {
                w.tx.execute(
                    "DELETE FROM dashboard_sessions WHERE id_hash = $1",
                    &[&id_hash.as_slice()],
                )
                .await?;
                Ok(())
            })
        }))
    }
}
