//! One member's feed: election, following the shared table, the leader's
//! fetch loop and a member's own first table, driven through a [`Host`].
//!
//! A member is one table-keeping unit of a proxy process (a wasm VM; the
//! native module's main thread); all the members of a process share one
//! [`crate::engine::shared::SharedData`]. The adapter calls [`Engine::tick`]
//! periodically (`feed.sync_interval_ms`): the member announces itself, takes
//! or renews the fetch lease and, holding it, keeps one feed request in
//! flight, publishing what comes back to the store ([`crate::engine::fetch`]).
//! Who leads is settled through [`crate::engine::followers`]: every member
//! starts as a candidate; a candidate that sees a live candidate of its
//! configuration started before it becomes a follower, and candidates claim
//! the lease only after [`CLAIM_GRACE_MS`], so that every member has announced
//! itself by then. A candidate keeps no table unless it serves requests;
//! followers keep the shared table in their own. While requests wait for a
//! member's first table and the store has none either, the member fetches
//! one itself at once ([`crate::engine::bootstrap`]). Every call returns the
//! [`Changes`] the adapter reacts to (gauges, waiting requests, streams).

use crate::config::FeedConfig;
use crate::engine::bootstrap::Bootstrap;
use crate::engine::fetch::{Ask, Fetcher, Outcome};
use crate::engine::fetch_log::{FetchLog, Log};
use crate::engine::followers::{self, Announcer, Role};
use crate::engine::host::{Host, Level};
use crate::engine::recheck::Recheck;
use crate::engine::request::FeedRequest;
use crate::engine::shared::SharedKeys;
use crate::engine::sync::{self, Lease, Release, Synced};
use crate::feed::KeySet;
use crate::table::KeyTable;

/// Shortest lease; it is also at least a few ticks long.
pub const MIN_LEASE_MS: u64 = 3000;
/// Snapshot pages stay in the store at least this long after publication,
/// so that members starting at the same time find them.
pub const SNAPSHOT_HOLD_MS: u64 = 2000;
/// A candidate claims the free lease no sooner than this after it was
/// configured: by then every member configured with it has announced itself.
pub const CLAIM_GRACE_MS: u64 = 200;
/// A member without any table retries its own fetch at least this often, so
/// that requests waiting for it see a control plane that just came up.
pub const BOOTSTRAP_RETRY_MS: u64 = 250;

/// What the adapter says about its member at the moment of a call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Member {
    /// It serves requests, so it keeps a table.
    pub serves: bool,
    /// Requests wait for its first table.
    pub waiting: bool,
}

/// What one engine call did, for the adapter to react to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    /// The member's table changed (or came): decide waiting requests, check
    /// open streams, update gauges.
    pub table: bool,
    /// Unix ms of the last successful answer from the control plane, when
    /// the call learned it (the table ages from there).
    pub contact_ms: Option<u64>,
    /// Usable answers handled.
    pub fetched: u32,
    /// Failed fetches (no call, no answer, a bad status or body).
    pub failed: u32,
}

impl Changes {
    fn count(&mut self, outcome: &Outcome) {
        if matches!(outcome, Outcome::Failed(_)) {
            self.failed = self.failed.saturating_add(1);
        } else {
            self.fetched = self.fetched.saturating_add(1);
        }
    }
}

/// The long-poll wait: at most a quarter of the maximum staleness. A held
/// request is no proof that the control plane is up, so the table ages from
/// the last answer; answers must come often enough that a table lives about
/// `max_staleness_seconds` after an outage begins (0 means plain polling
/// every `sync_interval_ms`, for tiny staleness settings).
pub fn effective_wait(feed: &FeedConfig) -> u32 {
    feed.wait_seconds.min(feed.max_staleness_seconds / 4)
}

/// Lowers `feed`'s long-poll wait to the [`effective_wait`], saying so
/// when it does (every adapter's line).
pub fn lower_wait(feed: &mut FeedConfig, log: Log<'_>) {
    let wait = effective_wait(feed);
    if wait < feed.wait_seconds {
        log(Level::Info, format_args!(
            "long-poll wait lowered from {} s to {wait} s: answers must come well within feed.max_staleness_seconds ({} s)",
            feed.wait_seconds,
            feed.max_staleness_seconds
        ));
        feed.wait_seconds = wait;
    }
}

/// One member's feed.
#[derive(Debug)]
pub struct Engine {
    config: FeedConfig,
    keys: SharedKeys,
    lease: Lease,
    fetcher: Fetcher,
    leader: bool,
    /// Its fetches' failure streak, for the log.
    fetch_log: FetchLog,
    announcer: Announcer,
    /// Still a candidate to lead (keeps no table unless it serves).
    candidate: bool,
    /// Unix ms when this member was configured.
    configured_ms: u64,
    /// This member's own first snapshot fetch, while it needs one.
    bootstrap: Option<Bootstrap>,
    /// The id this process's fetch stream takes when the store has none.
    fresh_client: String,
    /// Head version this member could not reach (logged once).
    stuck_at: Option<u64>,
    /// Unix ms of the configuration, until the first table is logged.
    first_table_from: Option<u64>,
}

impl Engine {
    /// A member of the feed `config` describes (its long-poll wait lowered
    /// per [`lower_wait`]), announced in the host's store. `seed` makes
    /// its ids unique (e.g. clock nanos mixed with a member number).
    pub fn new(host: &impl Host, mut config: FeedConfig, seed: u64) -> Engine {
        lower_wait(&mut config, &|level, message| host.log(level, message));
        let keys = SharedKeys::new(&format!(
            "{}|{}|{}",
            config.cluster, config.authority, config.path
        ));
        let tick = u64::from(config.sync_interval_ms);
        let now = host.now_ms();
        let lease = Lease::new(host, &keys, seed, MIN_LEASE_MS.max(4 * tick));
        let announcer = Announcer::new(lease.owner(), now);
        Engine {
            fetcher: Fetcher::new(tick, u64::from(config.retry_ms)),
            config,
            keys,
            lease,
            leader: false,
            fetch_log: FetchLog::default(),
            announcer,
            candidate: true,
            configured_ms: now,
            bootstrap: None,
            fresh_client: format!("{seed:x}"),
            stuck_at: None,
            first_table_from: Some(now),
        }
    }

    /// The feed configuration, with the wait in effect.
    pub fn config(&self) -> &FeedConfig {
        &self.config
    }

    /// True while this member holds the fetch lease.
    pub fn leads(&self) -> bool {
        self.leader
    }

    /// This member's second look at the shared head, for its requests
    /// ([`crate::engine::recheck`]).
    pub fn recheck(&self) -> Recheck {
        Recheck::new(self.keys.clone())
    }

    /// The key set of the shared table (`None` before the first one).
    pub fn key_set(&self, host: &impl Host) -> Option<KeySet> {
        sync::read_head(host, &self.keys).map(|h| h.key_set)
    }

    /// The periodic work: election, catching up with the store, the
    /// leader's chores and next request, this member's own first-table fetch.
    pub fn tick(
        &mut self,
        host: &impl Host,
        table: &mut Option<KeyTable>,
        member: Member,
    ) -> Changes {
        let now = host.now_ms();
        let mut changes = Changes::default();
        self.leader = self.elect(host, table, member, now);
        if self.follows(table, member) {
            self.follow_at(host, table, now, &mut changes);
        }
        if self.leader {
            self.lead_chores(host, now);
        }
        self.poll(host, now, &mut changes);
        self.bootstrap(host, table, member, now);
        changes
    }

    /// Catches up with the store now (e.g. a member about to serve its
    /// first request without a table).
    pub fn follow(&mut self, host: &impl Host, table: &mut Option<KeyTable>) -> Changes {
        let mut changes = Changes::default();
        self.follow_at(host, table, host.now_ms(), &mut changes);
        changes
    }

    /// Handles the answer to the call `token`, if it is one of this
    /// member's; `answer` reads its status (`None`: no HTTP answer) and body,
    /// and is called only then.
    pub fn on_response(
        &mut self,
        host: &impl Host,
        table: &mut Option<KeyTable>,
        member: Member,
        token: u32,
        answer: impl FnOnce() -> (Option<u16>, Vec<u8>),
    ) -> Changes {
        let mut changes = Changes::default();
        if self.bootstrap.as_mut().is_some_and(|b| b.finish(token)) {
            let (status, body) = answer();
            self.bootstrapped(host, table, member, status, &body, &mut changes);
        } else if self.fetcher.finish(u64::from(token)) && self.leader {
            let now = host.now_ms();
            let (status, body) = answer();
            let outcome = self
                .fetcher
                .on_response(host, &self.keys, status, &body, now);
            self.report(host, &outcome, &mut changes);
            match outcome {
                Outcome::Snapshot { .. } | Outcome::Delta { .. } if self.follows(table, member) => {
                    self.follow_at(host, table, now, &mut changes);
                }
                // The next page at once (in a proxy it opens a second
                // connection, as this call's is busy until we return; pages
                // are few).
                Outcome::Page { .. } => self.poll(host, now, &mut changes),
                // Anything else starts on the next tick: started from here,
                // it would find this call's connection busy and open another.
                _ => {}
            }
        }
        changes
    }

    /// The member goes away: the lease is given up (another member takes
    /// over at once) and the member leaves the followers.
    pub fn stop(&mut self, host: &impl Host) {
        if self.leader {
            self.lease.release(host, &self.keys);
        }
        self.announcer.withdraw(host, &self.keys, host.now_ms());
    }

    /// True when this member keeps a table.
    fn follows(&self, table: &Option<KeyTable>, member: Member) -> bool {
        !self.candidate || member.serves || table.is_some()
    }

    /// Announces this member, settles whether it stays a candidate, and
    /// takes or renews the lease; true while it leads.
    fn elect(
        &mut self,
        host: &impl Host,
        table: &Option<KeyTable>,
        member: Member,
        now: u64,
    ) -> bool {
        let role = if self.follows(table, member) {
            Role::Follower(table.as_ref().map_or(0, KeyTable::version))
        } else {
            Role::Candidate
        };
        self.announcer.announce(host, &self.keys, role, now);
        if self.candidate && !self.leader && self.announcer.defers(host, &self.keys, now) {
            // Another member of this configuration started first: it leads.
            self.candidate = false;
        }
        let (candidate, grace_over) = (
            self.candidate,
            now >= self.configured_ms.saturating_add(CLAIM_GRACE_MS),
        );
        let keys = &self.keys;
        let may_claim = || {
            if candidate {
                grace_over
            } else {
                // Only when no candidate is left (the leader's member went away).
                !followers::any_candidate(host, keys, now)
            }
        };
        self.lease.tick(host, keys, now, may_claim)
    }

    /// The leader's chores: a snapshot when a follower asked for one, and
    /// snapshot pages out of the store once every follower holds them.
    fn lead_chores(&mut self, host: &impl Host, now: u64) {
        if sync::take_resync(host, &self.keys) {
            self.fetcher.request_snapshot();
        }
        let release = Release {
            hold_ms: SNAPSHOT_HOLD_MS,
            keep_bytes: self.config.keep_snapshot_bytes,
        };
        if sync::release_snapshot(host, &self.keys, now, release) {
            host.log(
                Level::Debug,
                format_args!("every worker holds the snapshot: its pages left shared data"),
            );
        }
    }

    /// Catches up with the store.
    fn follow_at(
        &mut self,
        host: &impl Host,
        table: &mut Option<KeyTable>,
        now: u64,
        changes: &mut Changes,
    ) {
        let Some(head) = sync::read_head(host, &self.keys) else {
            return;
        };
        // The store has a table now: this member's own fetch stops, and its
        // half-built table goes before the shared one is built (a VM's
        // memory keeps its high-water mark: both at once would stay).
        self.bootstrap = None;
        changes.contact_ms = Some(head.contact_ms);
        let synced = sync::catch_up(host, &self.keys, &head, table);
        let stuck = match synced {
            Synced::Stuck | Synced::Changed { at_head: false, .. } => Some(head.version),
            _ => None,
        };
        if stuck.is_some() && stuck != self.stuck_at {
            host.log(Level::Warn, format_args!(
                "cannot reach key table version {} from shared data; asked the leader for a snapshot",
                head.version
            ));
        }
        self.stuck_at = stuck;
        if let Synced::Changed { from_snapshot, .. } = synced {
            let (version, keys) = summary(table);
            let source = if from_snapshot { "snapshot" } else { "deltas" };
            host.log(
                Level::Debug,
                format_args!(
                    "worker loaded key table version {version} ({keys} keys) from shared {source}"
                ),
            );
            self.table_changed(host, table, now, changes);
        }
    }

    /// Notes a table change; the first one is logged with its delay.
    fn table_changed(
        &mut self,
        host: &impl Host,
        table: &Option<KeyTable>,
        now: u64,
        changes: &mut Changes,
    ) {
        changes.table = true;
        if let Some(configured) = self.first_table_from.take() {
            let (version, keys) = summary(table);
            host.log(
                Level::Info,
                format_args!(
                    "first key table (version {version}, {keys} keys) loaded {} ms after this VM was configured",
                    now.saturating_sub(configured)
                ),
            );
        }
    }

    /// Starts the next feed request if this member leads and one is due.
    fn poll(&mut self, host: &impl Host, now: u64, changes: &mut Changes) {
        if !self.leader || !self.fetcher.due(now) {
            return;
        }
        let ask = self.fetcher.ask(sync::read_head(host, &self.keys).as_ref());
        let client = sync::client_id(host, &self.keys, &self.fresh_client);
        let wait = self.config.wait_seconds;
        match dispatch(host, &self.config, &ask, wait, Some(&client)) {
            Some(token) => self.fetcher.started(u64::from(token), &ask, now),
            None => {
                let outcome = self.fetcher.start_failed(now);
                self.report(host, &outcome, changes);
            }
        }
    }

    /// Starts this member's own snapshot fetch (or its next page) while
    /// requests wait for a first table that the store does not have (and
    /// this member does not lead).
    fn bootstrap(&mut self, host: &impl Host, table: &Option<KeyTable>, member: Member, now: u64) {
        let needed = (self.bootstrap.is_some() || member.waiting)
            && !self.leader
            && table.is_none()
            && sync::read_head(host, &self.keys).is_none();
        if !needed {
            self.bootstrap = None;
            return;
        }
        let retry_ms = u64::from(self.config.retry_ms).min(BOOTSTRAP_RETRY_MS);
        let boot = self
            .bootstrap
            .get_or_insert_with(|| Bootstrap::new(retry_ms));
        if !boot.due(now) {
            return;
        }
        let ask = boot.ask();
        match dispatch(host, &self.config, &ask, 0, None) {
            Some(token) => boot.started(token, &ask, now),
            None => boot.start_failed(now),
        }
    }

    /// Handles the answer to this member's own snapshot fetch.
    fn bootstrapped(
        &mut self,
        host: &impl Host,
        table: &mut Option<KeyTable>,
        member: Member,
        status: Option<u16>,
        body: &[u8],
        changes: &mut Changes,
    ) {
        let Some(boot) = self.bootstrap.as_mut() else {
            return;
        };
        let now = host.now_ms();
        let answer = boot.on_response(status, body, now);
        changes.count(&answer.0);
        match answer {
            (_, Some(fetched)) => {
                self.bootstrap = None;
                if table.is_some() {
                    return;
                }
                host.log(Level::Info, format_args!(
                    "key table version {} ({} keys) fetched by this VM directly: no table in shared data yet",
                    fetched.version(),
                    fetched.len()
                ));
                *table = Some(fetched);
                changes.contact_ms = Some(now);
                self.table_changed(host, table, now, changes);
            }
            (Outcome::Page { .. }, None) => self.bootstrap(host, table, member, now),
            (Outcome::Failed(failure), None) => {
                host.log(
                    Level::Debug,
                    format_args!("this VM's own key table fetch failed: {failure}"),
                );
                if !member.waiting {
                    // Nobody waits: the leader's fetch will do.
                    self.bootstrap = None;
                }
            }
            _ => {}
        }
    }

    /// Logs ([`FetchLog`]) and counts the outcome of a fetch.
    fn report(&mut self, host: &impl Host, outcome: &Outcome, changes: &mut Changes) {
        changes.count(outcome);
        let keys = &self.keys;
        let version = || sync::read_head(host, keys).map_or(0, |h| h.version);
        let log: Log<'_> = &|level, message| host.log(level, message);
        self.fetch_log.record(log, &self.config, outcome, version);
    }
}

/// Starts the feed request for `ask` (see [`FeedRequest::new`]).
fn dispatch(
    host: &impl Host,
    config: &FeedConfig,
    ask: &Ask,
    wait_seconds: u32,
    client: Option<&str>,
) -> Option<u32> {
    host.dispatch(&FeedRequest::new(config, ask, wait_seconds, client))
}

/// Version and size of `table` (zeros without one).
fn summary(table: &Option<KeyTable>) -> (u64, usize) {
    table.as_ref().map_or((0, 0), |t| (t.version(), t.len()))
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
