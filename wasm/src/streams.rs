//! Open WebSocket streams of this VM and the key each one was opened with.
//!
//! An allowed upgrade registers (context id, key hash); the stream leaves the
//! registry when it ends. After every table change, and every second for
//! expiry, the root context asks which streams lost their key and closes them.

use keygate::table::KeyTable;
use std::cell::RefCell;
use std::collections::HashMap;

/// True when the key with this hash no longer opens anything: revoked
/// (gone from the table) or expired.
pub fn key_is_dead(table: &KeyTable, hash: &[u8; 32], now_secs: u64) -> bool {
    table
        .get(hash)
        .is_none_or(|record| record.is_expired(now_secs))
}

/// The registry (per VM, shared by the root and the HTTP contexts).
#[derive(Debug, Default)]
pub struct Streams {
    open: RefCell<HashMap<u32, [u8; 32]>>,
}

impl Streams {
    /// Watches stream `context_id`, opened with the key of `hash`.
    pub fn register(&self, context_id: u32, hash: [u8; 32]) {
        self.open.borrow_mut().insert(context_id, hash);
    }

    /// Stops watching stream `context_id`.
    pub fn unregister(&self, context_id: u32) {
        self.open.borrow_mut().remove(&context_id);
    }

    /// The key hash stream `context_id` was opened with, if it is watched.
    pub fn hash_of(&self, context_id: u32) -> Option<[u8; 32]> {
        self.open.borrow().get(&context_id).copied()
    }

    /// True when no stream is watched.
    pub fn is_empty(&self) -> bool {
        self.open.borrow().is_empty()
    }

    /// Removes and returns the streams whose key is dead in `table`.
    pub fn take_dead(&self, table: &KeyTable, now_secs: u64) -> Vec<u32> {
        let mut open = self.open.borrow_mut();
        let dead: Vec<u32> = open
            .iter()
            .filter(|(_, hash)| key_is_dead(table, hash, now_secs))
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

    #[test]
    fn revoked_and_expired_streams_are_taken_once() {
        let streams = Streams::default();
        streams.register(10, [1; 32]); // live
        streams.register(11, [2; 32]); // revoked (not in table)
        streams.register(12, [3; 32]); // expires at 100
        let t = table(&[(1, 0), (3, 100)]);
        assert_eq!(streams.take_dead(&t, 99), vec![11]);
        assert_eq!(streams.take_dead(&t, 99), Vec::<u32>::new());
        assert_eq!(streams.take_dead(&t, 100), vec![12]);
        assert!(!streams.is_empty());
        streams.unregister(10);
        assert!(streams.is_empty());
    }
}
