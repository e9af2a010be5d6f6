//! The dashboard accounts and sessions of the SQLite store
//! (crate::store::accounts): writes in the writer's transaction, reads on a
//! reader.

use super::queries::{self, id_of, sql_id};
use super::SqliteStore;
use crate::store::accounts::{Account, Accounts, NewSession, PasswordSet};
use crate::store::{NewKey, StoreError, StoreFuture, Tenant};
use keygate::ids::OrgId;
use rusqlite::{params, Connection, OptionalExtension};

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Whether a tenant other than `org` signs in with `email`.
fn email_taken(conn: &Connection, email: &str, org: OrgId) -> Result<bool, StoreError> {
    let other: Option<i64> = conn
        .prepare_cached("SELECT tenant_id FROM dashboard_accounts WHERE email = ?1")?
        .query_row([email], |row| row.get(0))
        .optional()?;
    Ok(other.is_some_and(|id| id != sql_id(org.0)))
}

/// Sets the password of `org` unless the email is another's; ends its sessions.
fn upsert(
    conn: &Connection,
    org: OrgId,
    email: &str,
    hash: &str,
    now: u64,
) -> Result<PasswordSet, StoreError> {
    if email_taken(conn, email, org)? {
        return Ok(PasswordSet::EmailTaken);
    }
    conn.prepare_cached(
        "INSERT INTO dashboard_accounts (tenant_id, email, password_hash, updated_at) \
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT (tenant_id) DO UPDATE SET \
         email = excluded.email, password_hash = excluded.password_hash, \
         updated_at = excluded.updated_at",
    )?
    .execute(params![sql_id(org.0), email, hash, int(now)])?;
    conn.prepare_cached("DELETE FROM dashboard_sessions WHERE tenant_id = ?1")?
        .execute([sql_id(org.0)])?;
    Ok(PasswordSet::Set)
}

impl Accounts for SqliteStore {
    fn create_tenant_with_password(
        &self,
        tenant: Tenant,
        first_key: NewKey,
        password_hash: String,
    ) -> StoreFuture<'_, PasswordSet> {
        self.write(move |conn| {
            let email = tenant.email.to_lowercase();
            if email_taken(conn, &email, tenant.id)? {
                return Ok(PasswordSet::EmailTaken);
            }
            queries::insert_tenant(conn, &tenant)?;
            queries::insert_key(conn, &first_key)?;
            upsert(conn, tenant.id, &email, &password_hash, tenant.created_at)
        })
    }

    fn set_password(
        &self,
        org: OrgId,
        email: String,
        password_hash: String,
        now: u64,
    ) -> StoreFuture<'_, PasswordSet> {
        self.write(move |conn| upsert(conn, org, &email.to_lowercase(), &password_hash, now))
    }

    fn account(&self, email: String) -> StoreFuture<'_, Option<Account>> {
        self.read(move |conn| {
            let found = conn
                .prepare_cached(
                    "SELECT tenant_id, password_hash FROM dashboard_accounts WHERE email = ?1",
                )?
                .query_row([email.to_lowercase()], |row| {
                    Ok(Account {
                        org: OrgId(id_of(row, 0)?),
                        password_hash: row.get(1)?,
                    })
                })
                .optional()?;
            Ok(found)
        })
    }

    fn create_session(&self, session: NewSession) -> StoreFuture<'_, ()> {
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM dashboard_sessions WHERE expires_at <= ?1")?
                .execute([int(session.created_at)])?;
            conn.prepare_cached(
                "INSERT INTO dashboard_sessions (id_hash, tenant_id, created_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                session.id_hash.as_slice(),
                sql_id(session.org.0),
                int(session.created_at),
                int(session.expires_at)
            ])?;
            Ok(())
        })
    }

    fn session(&self, id_hash: [u8; 32], now: u64) -> StoreFuture<'_, Option<OrgId>> {
        self.read(move |conn| {
            let org = conn
                .prepare_cached(
                    "SELECT tenant_id FROM dashboard_sessions \
                     WHERE id_hash = ?1 AND expires_at > ?2",
                )?
                .query_row(params![id_hash.as_slice(), int(now)], |row| id_of(row, 0))
                .optional()?;
            Ok(org.map(OrgId))
        })
    }

    fn end_session(&self, id_hash: [u8; 32]) -> StoreFuture<'_, ()> {
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM dashboard_sessions WHERE id_hash = ?1")?
                .execute([id_hash.as_slice()])?;
            Ok(())
        })
    }
}
