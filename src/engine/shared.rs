//! Where one feed's shared state lives: the [`SharedData`] trait and its key names.
//!
//! Shared data is a process-wide key/value map with compare-and-swap (Envoy's
//! shared data for the wasm adapter, an in-memory map in tests). [`SharedKeys`] names every value one
//! feed keeps there; [`crate::engine::sync`] and
//! [`crate::engine::followers`] say what the values mean.

use std::cell::RefCell;
use std::collections::HashMap;

/// Number of delta slots (keys are reused modulo this).
pub const RING: u64 = 1024;

/// A process-wide key/value map with compare-and-swap.
pub trait SharedData {
    /// The value (empty when absent) and its CAS token (`None` when absent).
    fn get(&self, key: &str) -> (Vec<u8>, Option<u32>);
    /// Writes `value`; with `cas`, only if the key was not written since. True on success.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool;
}

/// The shared-data keys of one feed.
#[derive(Debug, Clone)]
pub struct SharedKeys {
    pub(super) lease: String,
    pub(super) head: String,
    page: String,
    pub(super) seq: String,
    pub(super) resync: String,
    delta: String,
    pub(super) client: String,
    pub(super) followers: String,
}

impl SharedKeys {
    /// Keys under `namespace` (one per feed, so two feeds in one store never mix).
    pub fn new(namespace: &str) -> SharedKeys {
        let key = |name: &str| format!("keygate:{namespace}:{name}");
        SharedKeys {
            lease: key("lease"),
            head: key("head"),
            page: key("snap."),
            seq: key("seq"),
            resync: key("resync"),
            delta: key("delta."),
            client: key("client"),
            followers: key("followers"),
        }
    }

    /// Page `i` of the snapshot of `generation`.
    pub(super) fn page(&self, generation: u64, i: u32) -> String {
        format!("{}{generation}.{i}", self.page)
    }

    /// The delta slot of `base`.
    pub(super) fn delta(&self, base: u64) -> String {
        format!("{}{}", self.delta, base % RING)
    }
}

/// A [`SharedData`] in this thread's memory only (a CAS token on a missing key fails).
#[derive(Debug, Default)]
pub struct MemoryShared {
    entries: RefCell<HashMap<String, (Vec<u8>, u32)>>,
}

impl SharedData for MemoryShared {
    fn get(&self, key: &str) -> (Vec<u8>, Option<u32>) {
        self.entries
            .borrow()
            .get(key)
            .map_or((Vec::new(), None), |(value, cas)| {
                (value.clone(), Some(*cas))
            })
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        let mut entries = self.entries.borrow_mut();
        let current = entries.get(key).map(|(_, c)| *c);
        if cas.is_some() && cas != current {
            return false;
        }
        let next = current.map_or(1, |c| c.wrapping_add(1));
        entries.insert(key.to_string(), (value.to_vec(), next));
        true
    }
}
