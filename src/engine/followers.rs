//! Every ticking member (VM) of the process, what it holds, and who should lead.
//!
//! One shared-data value (`<ns>followers`), lines of
//! `"<owner> <state> <seen ms> <started ms>"`, updated by CAS. `state` is `lead` for a VM
//! that keeps no table and is a candidate to fetch for the others, or the
//! version of the table a following VM holds (0 before its first). A VM
//! announces itself when its state changes and at least every
//! [`REFRESH_MS`]; lines not refreshed for [`TTL_MS`] are dropped (the VM is
//! gone). Two uses:
//!
//! - **who leads**: among VMs configured together (within
//!   [`START_WINDOW_MS`]), the candidate that started first (lowest sequence
//!   number in its owner id); the others follow. In Envoy that is the main
//!   thread's VM, which serves no request: the fetcher then holds no table of
//!   its own, and every worker holds exactly one. VMs of an older
//!   configuration (still draining after a reload) do not count, so the new
//!   main thread's VM stays a candidate and takes over when they go.
//! - **when snapshot pages may go**: once every live follower holds the
//!   snapshot's version. A VM that appears later finds no snapshot and asks
//!   the leader for a fresh one (sync's resync), so releasing early costs a
//!   fetch, never a wrong table.

use crate::engine::shared::{SharedData, SharedKeys};

/// A VM re-announces itself this often.
pub const REFRESH_MS: u64 = 1000;
/// A line older than this belongs to a VM that is gone.
const TTL_MS: u64 = 3 * REFRESH_MS;
/// CAS attempts per announcement (others may write at the same moment).
const ATTEMPTS: usize = 4;
/// The state word of a candidate.
const CANDIDATE: &str = "lead";
/// VMs configured this close together belong to one configuration.
const START_WINDOW_MS: u64 = 10_000;

/// What a VM is, as the others see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Keeps no table; may fetch for the others.
    Candidate,
    /// Keeps a table at this version (0 before its first).
    Follower(u64),
}

/// One VM's line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Line<'a> {
    owner: &'a str,
    role: Role,
    seen_ms: u64,
    started_ms: u64,
}

fn parse(text: &str) -> impl Iterator<Item = Line<'_>> {
    text.lines().filter_map(|line| {
        let mut words = line.split(' ');
        let owner = words.next()?;
        let role = match words.next()? {
            CANDIDATE => Role::Candidate,
            version => Role::Follower(version.parse().ok()?),
        };
        let seen_ms = words.next()?.parse().ok()?;
        let started_ms = words.next()?.parse().ok()?;
        Some(Line {
            owner,
            role,
            seen_ms,
            started_ms,
        })
    })
}

fn live(text: &str, now_ms: u64) -> impl Iterator<Item = Line<'_>> {
    parse(text).filter(move |l| l.seen_ms.saturating_add(TTL_MS) >= now_ms)
}

fn format_line(out: &mut String, line: &Line<'_>) {
    let Line {
        owner,
        role,
        seen_ms,
        started_ms,
    } = line;
    let text = match role {
        Role::Candidate => format!("{owner} {CANDIDATE} {seen_ms} {started_ms}\n"),
        Role::Follower(version) => format!("{owner} {version} {seen_ms} {started_ms}\n"),
    };
    out.push_str(&text);
}

/// The order in which VMs started: the sequence number in an owner id
/// (`"<seed>.<seq>"`, see `sync::Lease`).
fn start_order(owner: &str) -> u64 {
    owner
        .rsplit_once('.')
        .and_then(|(_, seq)| seq.parse().ok())
        .unwrap_or(u64::MAX)
}

/// One VM's announcements: who it is, and what it last said (to write only
/// when needed).
#[derive(Debug, Clone)]
pub struct Announcer {
    owner: String,
    started_ms: u64,
    last: Option<(Role, u64)>,
}

impl Announcer {
    /// The VM `owner` (a lease owner id), configured at `started_ms`.
    pub fn new(owner: &str, started_ms: u64) -> Announcer {
        Announcer {
            owner: owner.to_string(),
            started_ms,
            last: None,
        }
    }

    /// Records this VM's role, if it changed or the last announcement is
    /// getting old.
    pub fn announce(
        &mut self,
        store: &impl SharedData,
        keys: &SharedKeys,
        role: Role,
        now_ms: u64,
    ) {
        let fresh = self
            .last
            .is_some_and(|(r, at)| r == role && now_ms < at.saturating_add(REFRESH_MS));
        if !fresh && self.write(store, keys, Some(role), now_ms) {
            self.last = Some((role, now_ms));
        }
    }

    /// Removes this VM's line (it is going away).
    pub fn withdraw(&mut self, store: &impl SharedData, keys: &SharedKeys, now_ms: u64) {
        if self.last.take().is_some() {
            self.write(store, keys, None, now_ms);
        }
    }

    /// True when a live candidate configured together with this VM started
    /// before it: that one should lead, and this one follow.
    pub fn defers(&self, store: &impl SharedData, keys: &SharedKeys, now_ms: u64) -> bool {
        let (value, _) = store.get(&keys.followers);
        let text = String::from_utf8_lossy(&value);
        let mine = start_order(&self.owner);
        let earlier = live(&text, now_ms).any(|l| {
            l.role == Role::Candidate
                && l.owner != self.owner
                && start_order(l.owner) < mine
                && l.started_ms.saturating_add(START_WINDOW_MS) >= self.started_ms
        });
        earlier
    }

    /// Replaces this VM's line (or removes it with `None`), dropping dead lines.
    fn write(
        &self,
        store: &impl SharedData,
        keys: &SharedKeys,
        role: Option<Role>,
        now_ms: u64,
    ) -> bool {
        for _ in 0..ATTEMPTS {
            let (value, cas) = store.get(&keys.followers);
            let text = String::from_utf8_lossy(&value);
            let mut out = String::with_capacity(text.len() + 48);
            for line in live(&text, now_ms).filter(|l| l.owner != self.owner) {
                format_line(&mut out, &line);
            }
            if let Some(role) = role {
                let line = Line {
                    owner: &self.owner,
                    role,
                    seen_ms: now_ms,
                    started_ms: self.started_ms,
                };
                format_line(&mut out, &line);
            }
            if store.set(&keys.followers, out.as_bytes(), cas) {
                return true;
            }
        }
        false
    }
}

/// True when some VM is a live candidate to lead.
pub fn any_candidate(store: &impl SharedData, keys: &SharedKeys, now_ms: u64) -> bool {
    let (value, _) = store.get(&keys.followers);
    let text = String::from_utf8_lossy(&value);
    let any = live(&text, now_ms).any(|l| l.role == Role::Candidate);
    any
}

/// True when at least one follower is live and every live one holds
/// `version` or newer.
pub fn all_hold(store: &impl SharedData, keys: &SharedKeys, version: u64, now_ms: u64) -> bool {
    let (value, _) = store.get(&keys.followers);
    let text = String::from_utf8_lossy(&value);
    let mut held = live(&text, now_ms)
        .filter_map(|l| match l.role {
            Role::Follower(v) => Some(v),
            Role::Candidate => None,
        })
        .peekable();
    held.peek().is_some() && held.all(|v| v >= version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::sync::tests::MemStore;

    #[test]
    fn releases_only_when_every_live_follower_holds_the_version() {
        let store = MemStore::default();
        let keys = SharedKeys::new("t");
        let mut main = Announcer::new("m.1", 0);
        let mut a = Announcer::new("a.2", 0);
        let mut b = Announcer::new("b.3", 0);
        assert!(!all_hold(&store, &keys, 5, 0), "nobody announced yet");
        main.announce(&store, &keys, Role::Candidate, 0);
        assert!(!all_hold(&store, &keys, 5, 0), "a candidate holds nothing");
        a.announce(&store, &keys, Role::Follower(0), 0);
        b.announce(&store, &keys, Role::Follower(0), 10);
        assert!(!all_hold(&store, &keys, 5, 20));
        a.announce(&store, &keys, Role::Follower(5), 30);
        assert!(!all_hold(&store, &keys, 5, 40), "b is still at 0");
        b.announce(&store, &keys, Role::Follower(7), 50);
        assert!(all_hold(&store, &keys, 5, 60));
        assert!(!all_hold(&store, &keys, 6, 60), "a is at 5");
    }

    #[test]
    fn the_first_started_candidate_of_a_configuration_leads() {
        let store = MemStore::default();
        let keys = SharedKeys::new("t");
        let mut main = Announcer::new("m.9", 0);
        let mut worker = Announcer::new("w.10", 3);
        let mut other = Announcer::new("x.11", 4);
        assert!(!any_candidate(&store, &keys, 0));
        // A worker ticks before the main VM announced: nothing to defer to yet.
        worker.announce(&store, &keys, Role::Candidate, 50);
        assert!(!worker.defers(&store, &keys, 50));
        main.announce(&store, &keys, Role::Candidate, 52);
        other.announce(&store, &keys, Role::Candidate, 54);
        assert!(worker.defers(&store, &keys, 100) && other.defers(&store, &keys, 100));
        assert!(!main.defers(&store, &keys, 100));
        assert!(any_candidate(&store, &keys, 100));

        // A reload: the new configuration's VMs defer among themselves only.
        let (t, mut new_main, mut new_worker) = (
            60_000,
            Announcer::new("m.20", 60_000),
            Announcer::new("w.21", 60_003),
        );
        main.announce(&store, &keys, Role::Candidate, t);
        new_main.announce(&store, &keys, Role::Candidate, t + 50);
        new_worker.announce(&store, &keys, Role::Candidate, t + 51);
        assert!(
            !new_main.defers(&store, &keys, t + 100),
            "the old leader is not of its configuration"
        );
        assert!(new_worker.defers(&store, &keys, t + 100));
    }

    #[test]
    fn gone_vms_stop_counting_and_lines_are_rewritten_sparingly() {
        let store = MemStore::default();
        let keys = SharedKeys::new("t");
        let mut a = Announcer::new("a.1", 0);
        let mut b = Announcer::new("b.2", 0);
        let mut main = Announcer::new("m.0", 0);
        main.announce(&store, &keys, Role::Candidate, 0);
        a.announce(&store, &keys, Role::Follower(9), 0);
        b.announce(&store, &keys, Role::Follower(1), 0);
        // b and the main VM go silent; a keeps announcing.
        let mut now = 0;
        while now <= TTL_MS + REFRESH_MS {
            a.announce(&store, &keys, Role::Follower(9), now);
            now += 50;
        }
        assert!(all_hold(&store, &keys, 9, now), "b aged out");
        assert!(!any_candidate(&store, &keys, now), "so did the main VM");
        a.announce(&store, &keys, Role::Follower(9), now);
        let (_, cas) = store.get(&keys.followers);
        a.announce(&store, &keys, Role::Follower(9), now + 1);
        assert_eq!(
            store.get(&keys.followers).1,
            cas,
            "no write when nothing changed"
        );
        a.withdraw(&store, &keys, now);
        assert!(!all_hold(&store, &keys, 0, now), "nobody left");
    }
}
