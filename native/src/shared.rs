//! What one filter configuration shares between the main thread and every
//! worker: the policy, the one key table, its freshness, the stats, the
//! usage counts and the streams the main thread may have to wake.
//!
//! The table is an atomically swapped `Arc` ([`ArcSwapOption`]): a request
//! loads it without a lock and keeps its version for the whole decision;
//! the main thread swaps in the next one, and the old one goes when its last
//! reader is done. So a 1M-key table is held once per Envoy process, not
//! once per worker, and a lookup never waits for an update.
//!
//! Streams that need waking register with their own scheduler ([`Watch`]):
//! requests waiting for the first table (woken when it comes, or when their
//! wait is over) and open WebSockets (woken to check their key after every
//! table change and every second). The registry is a mutex taken once per
//! such stream event, never by an ordinary request.

use crate::host::FilterScheduler;
use crate::stats::Stats;
use crate::usage::Usage;
use arc_swap::{ArcSwapOption, Guard};
use keygate::decision::{Grant, Policy};
use keygate::table::KeyTable;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// Live configurations by feed (`cluster|authority|path`): a new one (a
/// listener or filter reload) starts with the table of one already running,
/// then follows the feed itself.
static PEERS: Mutex<Vec<(String, Weak<Shared>)>> = Mutex::new(Vec::new());

/// Event: a request waiting for the first table is to be decided now.
pub const EVENT_DECIDE: u64 = 1;
/// Event: a WebSocket is to check that its key still lives.
pub const EVENT_CHECK_KEY: u64 = 2;

/// A stream the main thread may wake, and why.
pub struct Watch {
    pub scheduler: FilterScheduler,
    /// Waiting for the first table until this unix ms.
    pub waiting_until: Option<u64>,
    /// An open WebSocket and what it was allowed with.
    pub websocket: Option<Grant>,
}

/// The shared state of one filter configuration.
pub struct Shared {
    pub policy: Policy,
    pub stats: Stats,
    /// Usage counts of every worker.
    pub usage: Usage,
    table: ArcSwapOption<KeyTable>,
    /// Unix ms of the last successful answer from the control plane.
    contact_ms: AtomicU64,
    /// A table was ever loaded (a stale one is not "never loaded").
    ever_loaded: AtomicBool,
    pub max_staleness_ms: u64,
    pub first_table_wait_ms: u64,
    next_stream: AtomicU64,
    watched: Mutex<HashMap<u64, Watch>>,
}

impl Shared {
    pub fn new(
        policy: Policy,
        stats: Stats,
        usage: Usage,
        max_staleness_ms: u64,
        first_wait_ms: u64,
    ) -> Shared {
        Shared {
            policy,
            stats,
            usage,
            table: ArcSwapOption::empty(),
            contact_ms: AtomicU64::new(0),
            ever_loaded: AtomicBool::new(false),
            max_staleness_ms,
            first_table_wait_ms: first_wait_ms,
            next_stream: AtomicU64::new(1),
            watched: Mutex::new(HashMap::new()),
        }
    }

    /// The table, whatever its age (the feed's base).
    pub fn table(&self) -> Option<Arc<KeyTable>> {
        self.table.load_full()
    }

    /// The table when it is fresh enough to decide with: `None` before the
    /// first table, or when the last answer is older than the maximum
    /// staleness. A borrow for one hook (no reference count is moved, so
    /// workers do not contend on one): never keep it.
    pub fn fresh_table(&self, now_ms: u64) -> Guard<Option<Arc<KeyTable>>> {
        let age = now_ms.saturating_sub(self.contact_ms.load(Ordering::Acquire));
        if age > self.max_staleness_ms {
            return Guard::from_inner(None);
        }
        self.table.load()
    }

    /// True once any table was loaded.
    pub fn ever_loaded(&self) -> bool {
        self.ever_loaded.load(Ordering::Acquire)
    }

    /// Publishes the next table to every worker (an answer came at `now_ms`).
    pub fn publish(&self, table: KeyTable, now_ms: u64) {
        self.contact_ms.store(now_ms, Ordering::Release);
        self.table.store(Some(Arc::new(table)));
        self.ever_loaded.store(true, Ordering::Release);
    }

    /// Joins the configurations of `feed` and starts with the table of one
    /// of them, if any holds one (shared, not copied); true when it did.
    pub fn join_peers(self: &Arc<Shared>, feed: &str) -> bool {
        let mut peers = PEERS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        peers.retain(|(_, peer)| peer.strong_count() > 0);
        let adopted = peers
            .iter()
            .filter(|(key, _)| key == feed)
            .filter_map(|(_, peer)| peer.upgrade())
            .find_map(|peer| peer.table().map(|t| (t, peer.contact_ms())));
        peers.push((feed.to_string(), Arc::downgrade(self)));
        let Some((table, contact_ms)) = adopted else {
            return false;
        };
        self.contact_ms.store(contact_ms, Ordering::Release);
        self.table.store(Some(table));
        self.ever_loaded.store(true, Ordering::Release);
        true
    }

    /// Records a successful answer that changed nothing (a 304).
    pub fn contact(&self, now_ms: u64) {
        self.contact_ms.store(now_ms, Ordering::Release);
    }

    /// Unix ms of the last successful answer (0: never).
    pub fn contact_ms(&self) -> u64 {
        self.contact_ms.load(Ordering::Acquire)
    }

    /// A fresh id for a stream.
    pub fn stream_id(&self) -> u64 {
        self.next_stream.fetch_add(1, Ordering::Relaxed)
    }

    /// The registry of woken streams. A poisoned lock still holds a
    /// consistent map (every change is one insert or remove).
    pub fn watched(&self) -> MutexGuard<'_, HashMap<u64, Watch>> {
        self.watched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// True when some request waits for the first table.
    pub fn has_waiting(&self) -> bool {
        self.watched().values().any(|w| w.waiting_until.is_some())
    }

    /// Wakes every waiting request (the table came); with `expired_at`,
    /// only those whose wait is over at that unix ms.
    pub fn wake_waiting(&self, expired_at: Option<u64>) {
        let mut watched = self.watched();
        for watch in watched.values_mut() {
            let due = watch
                .waiting_until
                .is_some_and(|until| expired_at.is_none_or(|now| now >= until));
            if due {
                watch.waiting_until = None;
                watch.scheduler.commit(EVENT_DECIDE);
            }
        }
    }

    /// Wakes every open WebSocket `table` no longer allows at `now_secs`.
    pub fn wake_dead_websockets(&self, table: &KeyTable, now_secs: u64) {
        let watched = self.watched();
        for watch in watched.values() {
            if watch
                .websocket
                .is_some_and(|grant| !self.policy.still_allows(table, &grant, now_secs))
            {
                watch.scheduler.commit(EVENT_CHECK_KEY);
            }
        }
    }
}
