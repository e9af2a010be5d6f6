//! A second look before a refusal a newer table could lift (SPEC §16).
//!
//! In the wasm adapter every worker VM keeps its own copy of the key table
//! and follows the process's shared head on its tick, while the control
//! plane counts a change as delivered once the leader stored it there: for
//! a tick or so a worker may lag what its Envoy already holds. So a refusal
//! that a newer table could turn into an allow ([`may_lift`]: an unknown
//! well-formed key, a missing scope, a suspended tenant, a used-up quota or
//! spending cap) first reads the shared head (one store read) and, when it
//! is newer than the member's table, brings the table there as a tick would
//! (the delta chain, or the snapshot) before deciding again: one catch-up,
//! no loop ([`Recheck::catch_up`]). Nothing else pays for it.

use crate::credential::{self, Extracted};
use crate::decision::{Deny, DenyReason, Policy, Request};
use crate::engine::shared::{SharedData, SharedKeys};
use crate::engine::sync::{self, Synced};
use crate::table::KeyTable;

/// True when a newer table could allow the request `deny` refused: its key
/// is well-formed and was not found (a key created or rotated since), or
/// was found but lacks a scope, or its tenant is suspended, or its quota or
/// spending cap is used up (all of which a change may lift).
pub fn may_lift<H, V>(policy: &Policy, request: &Request<'_, H, V>, deny: &Deny) -> bool
where
    H: AsRef<str>,
    V: AsRef<str>,
{
    match deny.reason {
        DenyReason::InvalidKey => matches!(
            credential::extract(request.headers, request.path),
            Extracted::Key(c) if policy.key_format.parse(&c.key, &policy.key_prefix).is_ok()
        ),
        DenyReason::MissingScope
        | DenyReason::OrgSuspended
        | DenyReason::QuotaExhausted
        | DenyReason::SpendExhausted => true,
        _ => false,
    }
}

/// One member's second look at the shared head of its feed.
#[derive(Debug, Clone)]
pub struct Recheck {
    keys: SharedKeys,
}

impl Recheck {
    /// For the feed whose shared values `keys` names.
    pub(crate) fn new(keys: SharedKeys) -> Recheck {
        Recheck { keys }
    }

    /// Brings `table` to the shared head when the head is newer (another
    /// key set, or a later version); a table as new as the head costs this
    /// one read. `Some(contact_ms)` of the head when the table changed.
    /// A member without a table is left to its first-table wait.
    pub fn catch_up(&self, store: &impl SharedData, table: &mut Option<KeyTable>) -> Option<u64> {
        let local = table.as_ref().map(|t| (t.key_set(), t.version()))?;
        let head = sync::read_head(store, &self.keys)?;
        let newer = head.key_set != local.0 || head.version > local.1;
        if !newer {
            return None;
        }
        match sync::catch_up(store, &self.keys, &head, table) {
            Synced::Changed { .. } => Some(head.contact_ms),
            Synced::Unchanged | Synced::Stuck => None,
        }
    }
}

#[cfg(test)]
#[path = "recheck_tests.rs"]
mod tests;
