//! Open WebSocket streams of this VM and what each one was allowed with.
//!
//! An allowed upgrade registers (context id, [`Grant`]: key hash and rule);
//! the stream leaves the registry when it ends. After every table change,
//! and every second for expiry, the root context asks which streams the
//! table no longer allows ([`Policy::still_allows`]: revoked, expired,
//! suspended, quota or cap used up, scope removed) and closes them.

use keygate::decision::{Grant, Policy};
use keygate::table::KeyTable;
use std::cell::RefCell;
use std::collections::HashMap;

/// The registry (per VM, shared by the root and the HTTP contexts).
#[derive(Debug, Default)]
pub struct Streams {
    open: RefCell<HashMap<u32, Grant>>,
}

impl Streams {
    /// Watches stream `context_id`, allowed with `grant`.
    pub fn register(&self, context_id: u32, grant: Grant) {
        self.open.borrow_mut().insert(context_id, grant);
    }

    /// Stops watching stream `context_id`.
    pub fn unregister(&self, context_id: u32) {
        self.open.borrow_mut().remove(&context_id);
    }

    /// What stream `context_id` was allowed with, if it is watched.
    pub fn grant_of(&self, context_id: u32) -> Option<Grant> {
        self.open.borrow().get(&context_id).copied()
    }

    /// True when no stream is watched.
    pub fn is_empty(&self) -> bool {
        self.open.borrow().is_empty()
    }

    /// Removes and returns the streams `policy` no longer allows in `table`.
    pub fn take_dead(&self, policy: &Policy, table: &KeyTable, now_secs: u64) -> Vec<u32> {
        let mut open = self.open.borrow_mut();
        let dead: Vec<u32> = open
            .iter()
            .filter(|(_, grant)| !policy.still_allows(table, grant, now_secs))
            .map(|(&id, _)| id)
            .collect();
        for id in &dead {
            open.remove(id);
        }
        dead
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate::config::FilterConfig;
    use keygate::feed::{encode_snapshot, FeedEntry};
    use keygate::ids::{KeyId, OrgId};
    use keygate::key::Environment;
    use keygate::table::{decode, Update};

    const KS: keygate::feed::KeySet = keygate::feed::KeySet([7; 16]);

    fn table(entries: &[(u8, u64)]) -> KeyTable {
        let entries: Vec<FeedEntry> = entries
            .iter()
            .map(|&(n, expires_at)| FeedEntry {
                hash: [n; 32],
                key_id: KeyId(u64::from(n)),
                org_id: OrgId(1),
                expires_at,
                scopes: "a:b".into(),
                tier: "free".into(),
                environment: Environment::Live,
                ..FeedEntry::default()
            })
            .collect();
        match decode(&encode_snapshot(KS, 1, &entries)).unwrap() {
            Update::Snapshot(t) => *t,
            Update::Delta(_) => unreachable!(),
        }
    }

    fn grant(n: u8, rule: Option<usize>) -> Grant {
        Grant {
            hash: [n; 32],
            rule,
        }
    }

    #[test]
    fn streams_the_table_no_longer_allows_are_taken_once() {
        let json = r#"{"feed":{"cluster":"cp"},"rules":[{"path_prefix":"/c","any_of":["c:d"]}]}"#;
        let policy = Policy::from(&FilterConfig::from_json(json.as_bytes()).unwrap());
        let streams = Streams::default();
        streams.register(10, grant(1, None)); // live
        streams.register(11, grant(2, None)); // revoked (not in table)
        streams.register(12, grant(3, None)); // expires at 100
        streams.register(13, grant(1, Some(0))); // its rule needs a scope the key lacks
        let t = table(&[(1, 0), (3, 100)]);
        let mut dead = streams.take_dead(&policy, &t, 99);
        dead.sort_unstable();
        assert_eq!(dead, vec![11, 13]);
        assert_eq!(streams.take_dead(&policy, &t, 99), Vec::<u32>::new());
        assert_eq!(streams.take_dead(&policy, &t, 100), vec![12]);
        assert!(!streams.is_empty());
        streams.unregister(10);
        assert!(streams.is_empty());
    }
}
