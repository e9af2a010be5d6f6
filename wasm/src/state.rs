//! What a root context shares with the HTTP contexts it creates (one VM, one
//! thread: `Rc` and `RefCell`).

use crate::engine_host::EnvoyHost;
use crate::host;
use crate::stats::Stats;
use crate::streams::Streams;
use crate::usage::Usage;
use crate::waiting::Waiting;
use keygate::decision::Policy;
use keygate::engine::recheck::Recheck;
use keygate::table::KeyTable;
use std::cell::{Cell, Ref, RefCell};
use std::time::{Duration, UNIX_EPOCH};

/// The per-root state.
#[derive(Default)]
pub struct State {
    /// The configured policy; `None` until `on_configure` succeeds.
    pub policy: RefCell<Option<Policy>>,
    /// The key table of this VM.
    pub table: RefCell<Option<KeyTable>>,
    /// Unix ms of the last successful contact with the control plane (from the head).
    pub contact_ms: Cell<u64>,
    /// A table older than this (since the last contact) is not used.
    pub max_staleness_ms: Cell<u64>,
    /// The host's clock (unix ms) as of the last tick: requests read this
    /// rather than make a host call each (expiry is in seconds, staleness in
    /// seconds, the tick a few tens of ms).
    pub clock_ms: Cell<u64>,
    /// True once this VM created an HTTP context (it serves requests).
    pub serving: Cell<bool>,
    /// Open WebSocket streams.
    pub streams: Streams,
    /// Requests waiting for this VM's first table.
    pub waiting: Waiting,
    /// How long such a request may wait (`feed.first_table_wait_ms`).
    pub first_table_wait_ms: Cell<u64>,
    pub stats: Stats,
    /// Usage counting (and, in the leader, reporting).
    pub usage: Usage,
    /// A request's look at the shared head before a refusal a newer table
    /// could lift; `None` until configured.
    pub recheck: RefCell<Option<Recheck>>,
    /// Set when a request brought the table forward: the next tick reacts
    /// as to any table change (gauges, dead WebSockets).
    pub caught_up: Cell<bool>,
}

impl State {
    /// A state with this VM's metrics defined.
    pub fn new() -> State {
        State {
            stats: Stats::define(),
            ..State::default()
        }
    }

    /// True while the last successful contact is recent enough to trust the table.
    pub fn is_fresh(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.contact_ms.get()) <= self.max_staleness_ms.get()
    }

    /// Brings this VM's table to the process's shared head if that is
    /// newer (one shared-data read otherwise; SPEC §16); true when the
    /// table changed.
    pub fn catch_up(&self) -> bool {
        let recheck = self.recheck.borrow();
        let (Some(recheck), Ok(mut table)) = (recheck.as_ref(), self.table.try_borrow_mut()) else {
            return false;
        };
        let Some(contact_ms) = recheck.catch_up(&EnvoyHost, &mut table) else {
            return false;
        };
        self.contact_ms.set(contact_ms);
        self.caught_up.set(true);
        true
    }

    /// The table if it may be used at `now_ms` (loaded and not too stale).
    pub fn fresh_table(&self, now_ms: u64) -> Option<Ref<'_, KeyTable>> {
        if !self.is_fresh(now_ms) {
            return None;
        }
        Ref::filter_map(self.table.borrow(), Option::as_ref).ok()
    }
}

/// The host's clock since the unix epoch (zero if it cannot be read).
pub fn unix_now() -> Duration {
    host::current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .unwrap_or_default()
}

/// The host's clock in unix milliseconds.
pub fn now_ms() -> u64 {
    u64::try_from(unix_now().as_millis()).unwrap_or(u64::MAX)
}
