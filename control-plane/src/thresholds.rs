//! The one hook for the caps' threshold crossings (80 % and 100 % of a
//! quota or spending cap, each once a period) that an ingested usage batch
//! reports: today they are logged; the webhooks' `key.quota.threshold`
//! event is sent from here.

use crate::store::caps::Crossing;

/// Hands the crossings of one ingested batch on.
pub fn crossed(crossings: &[Crossing]) {
    for c in crossings {
        tracing::info!(org_id = %c.org, key_id = %c.key_id, kind = ?c.kind,
                       percent = c.percent, used = c.used, limit = c.limit,
                       "key cap threshold crossed");
    }
}
