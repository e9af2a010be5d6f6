//! Requests paused until this VM's first key table.
//!
//! A request that needs a key in a VM that never had a table waits (paused in
//! `on_http_request_headers`) until the table arrives or until
//! `feed.first_table_wait_ms` passed; then the root context decides it as any
//! other ([`crate::http::decide`]) and lets it go on. At most [`MAX_WAITING`]
//! wait at once (more get 503 at once), and a request whose client went away
//! leaves the registry when its context ends. While a request waits, its
//! body and trailers are held too: by Envoy's filter contract, going on with
//! them would send the stopped headers on, undecided. The root resumes them
//! through [`crate::host`].

use std::cell::RefCell;
use std::collections::HashMap;

/// Most requests waiting at once in one VM.
pub const MAX_WAITING: usize = 10_000;

/// The paused requests of one VM: context id and deadline (unix ms).
#[derive(Debug, Default)]
pub struct Waiting {
    paused: RefCell<HashMap<u32, u64>>,
}

impl Waiting {
    /// Pauses request `context_id` until `deadline_ms`; false when full.
    pub fn pause(&self, context_id: u32, deadline_ms: u64) -> bool {
        let mut paused = self.paused.borrow_mut();
        if paused.len() >= MAX_WAITING {
            return false;
        }
        paused.insert(context_id, deadline_ms);
        true
    }

    /// Forgets request `context_id` (it ended).
    pub fn forget(&self, context_id: u32) {
        self.paused.borrow_mut().remove(&context_id);
    }

    /// True while request `context_id` waits.
    pub fn contains(&self, context_id: u32) -> bool {
        self.paused.borrow().contains_key(&context_id)
    }

    /// True when no request waits.
    pub fn is_empty(&self) -> bool {
        self.paused.borrow().is_empty()
    }

    /// Removes and returns every waiting request.
    pub fn take_all(&self) -> Vec<u32> {
        self.paused.borrow_mut().drain().map(|(id, _)| id).collect()
    }

    /// Removes and returns the requests whose deadline is past at `now_ms`.
    pub fn take_expired(&self, now_ms: u64) -> Vec<u32> {
        let mut paused = self.paused.borrow_mut();
        let expired: Vec<u32> = paused
            .iter()
            .filter(|(_, &deadline)| deadline <= now_ms)
            .map(|(&id, _)| id)
            .collect();
        for id in &expired {
            paused.remove(id);
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_requests_leave_once_and_ended_ones_are_forgotten() {
        let waiting = Waiting::default();
        assert!(waiting.pause(1, 100));
        assert!(waiting.pause(2, 200));
        assert!(waiting.pause(3, 300));
        waiting.forget(2);
        assert!(waiting.contains(1) && !waiting.contains(2));
        assert_eq!(waiting.take_expired(250), vec![1]);
        assert!(waiting.take_expired(250).is_empty());
        assert_eq!(waiting.take_all(), vec![3]);
        assert!(waiting.is_empty());
    }

    #[test]
    fn the_registry_is_bounded() {
        let waiting = Waiting::default();
        for id in 0..MAX_WAITING as u32 {
            assert!(waiting.pause(id, 1));
        }
        assert!(!waiting.pause(u32::MAX, 1));
        waiting.forget(0);
        assert!(waiting.pause(u32::MAX, 1));
    }
}
