//! Storage of the dashboard's sign-in (SPEC §12): a tenant's password hash
//! under its email, and sessions kept by the SHA-256 of their id only.
//! Both backends implement [`Accounts`]; every [`super::Store`] is one.

use super::{NewKey, StoreFuture, Tenant};
use keygate::ids::OrgId;

/// A tenant that can sign in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub org: OrgId,
    /// The argon2id PHC string.
    pub password_hash: String,
}

/// What setting a password did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordSet {
    Set,
    /// Another tenant signs in with this email: nothing was written.
    EmailTaken,
}

/// A session to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    /// SHA-256 of the session id (the id itself is only in the cookie).
    pub id_hash: [u8; 32],
    pub org: OrgId,
    pub created_at: u64,
    pub expires_at: u64,
}

/// Dashboard accounts and sessions.
pub trait Accounts {
    /// Creates a tenant, its first key and its password (under the
    /// tenant's email, lower-cased) atomically; nothing if the email is taken.
    fn create_tenant_with_password(
        &self,
        tenant: Tenant,
        first_key: NewKey,
        password_hash: String,
    ) -> StoreFuture<'_, PasswordSet>;

    /// Sets (or replaces) the password of `org` under `email` (lower-cased)
    /// and ends its sessions, in one transaction.
    fn set_password(
        &self,
        org: OrgId,
        email: String,
        password_hash: String,
        now: u64,
    ) -> StoreFuture<'_, PasswordSet>;

    /// The account of `email` (lower-cased), if any.
    fn account(&self, email: String) -> StoreFuture<'_, Option<Account>>;

    /// Stores a session (and drops every expired one).
    fn create_session(&self, session: NewSession) -> StoreFuture<'_, ()>;

    /// The tenant of the session with this id hash, if it has not expired
    /// at `now`.
    fn session(&self, id_hash: [u8; 32], now: u64) -> StoreFuture<'_, Option<OrgId>>;

    /// Ends a session (sign-out); no session is no error.
    fn end_session(&self, id_hash: [u8; 32]) -> StoreFuture<'_, ()>;
}
