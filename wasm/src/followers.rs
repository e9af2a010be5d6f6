//! Every ticking VM of the process, what it holds, and who should lead.
//!
//! One shared-data value (`<ns>followers`), lines of
//! `"<owner> <state> <seen ms>"`, updated by CAS. `state` is `lead` for a VM
//! that keeps no table and is a candidate to fetch for the others, or the
//! version of the table a following VM holds (0 before its first). A VM
//! announces itself when its state changes and at least every
//! [`REFRESH_MS`]; lines not refreshed for [`TTL_MS`] are dropped (the VM is
//! gone). Two uses:
//!
//! - **who leads**: the live candidate that started first (lowest sequence
//!   number in its owner id). In Envoy that is the main thread's VM, which
//!   serves no request: the fetcher then holds no table of its own, and
//!   every worker holds exactly one.
//! - **when snapshot pages may go**: once every live follower holds the
//!   snapshot's version. A VM that appears later finds no snapshot and asks
//!   the leader for a fresh one (sync's resync), so releasing early costs a
//!   fetch, never a wrong table.

use crate::sync::{Keys, Store};

/// A VM re-announces itself this often.
pub const REFRESH_MS: u64 = 1000;
/// A line older than this belongs to a VM that is gone.
const TTL_MS: u64 = 3 * REFRESH_MS;
/// CAS attempts per announcement (others may write at the same moment).
const ATTEMPTS: usize = 4;
/// The state word of a candidate.
const CANDIDATE: &str = "lead";

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
        Some(Line {
            owner,
            role,
            seen_ms,
        })
    })
}

fn live(text: &str, now_ms: u64) -> impl Iterator<Item = Line<'_>> {
    parse(text).filter(move |l| l.seen_ms.saturating_add(TTL_MS) >= now_ms)
}

fn format_line(out: &mut String, owner: &str, role: Role, seen_ms: u64) {
    let line = match role {
        Role::Candidate => format!("{owner} {CANDIDATE} {seen_ms}\n"),
        Role::Follower(version) => format!("{owner} {version} {seen_ms}\n"),
    };
    out.push_str(&line);
}

/// The order in which VMs started: the sequence number in an owner id
/// (`"<seed>.<seq>"`, see `sync::Lease`).
fn start_order(owner: &str) -> u64 {
    owner
        .rsplit_once('.')
        .and_then(|(_, seq)| seq.parse().ok())
        .unwrap_or(u64::MAX)
}

/// What this VM last announced, to announce only when needed.
#[derive(Debug, Clone, Default)]
pub struct Announcer {
    last: Option<(Role, u64)>,
}

impl Announcer {
    /// Records `owner`'s role, if it changed or the last announcement is
    /// getting old.
    pub fn announce(
        &mut self,
        store: &impl Store,
        keys: &Keys,
        owner: &str,
        role: Role,
        now_ms: u64,
    ) {
        let fresh = self
            .last
            .is_some_and(|(r, at)| r == role && now_ms < at.saturating_add(REFRESH_MS));
        if !fresh && write(store, keys, owner, Some(role), now_ms) {
            self.last = Some((role, now_ms));
        }
    }

    /// Removes `owner`'s line (the VM is going away).
    pub fn withdraw(&mut self, store: &impl Store, keys: &Keys, owner: &str, now_ms: u64) {
        if self.last.take().is_some() {
            write(store, keys, owner, None, now_ms);
        }
    }
}

/// Replaces `owner`'s line (or removes it with `None`), dropping dead lines.
fn write(store: &impl Store, keys: &Keys, owner: &str, role: Option<Role>, now_ms: u64) -> bool {
    for _ in 0..ATTEMPTS {
        let (value, cas) = store.get(&keys.followers);
        let text = String::from_utf8_lossy(&value);
        let mut out = String::with_capacity(text.len() + 40);
        for line in live(&text, now_ms).filter(|l| l.owner != owner) {
            format_line(&mut out, line.owner, line.role, line.seen_ms);
        }
        if let Some(role) = role {
            format_line(&mut out, owner, role, now_ms);
        }
        if store.set(&keys.followers, out.as_bytes(), cas) {
            return true;
        }
    }
    false
}

/// The live candidate that started first: the one that should lead.
pub fn first_candidate(store: &impl Store, keys: &Keys, now_ms: u64) -> Option<String> {
    let (value, _) = store.get(&keys.followers);
    let text = String::from_utf8_lossy(&value);
    live(&text, now_ms)
        .filter(|l| l.role == Role::Candidate)
        .min_by_key(|l| start_order(l.owner))
        .map(|l| l.owner.to_string())
}

/// True when at least one follower is live and every live one holds
/// `version` or newer.
pub fn all_hold(store: &impl Store, keys: &Keys, version: u64, now_ms: u64) -> bool {
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
    use crate::sync::tests::MemStore;

    #[test]
    fn releases_only_when_every_live_follower_holds_the_version() {
        let store = MemStore::default();
        let keys = Keys::new("t");
        let [mut a, mut b, mut main] = [(); 3].map(|()| Announcer::default());
        assert!(!all_hold(&store, &keys, 5, 0), "nobody announced yet");
        main.announce(&store, &keys, "m.1", Role::Candidate, 0);
        assert!(!all_hold(&store, &keys, 5, 0), "a candidate holds nothing");
        a.announce(&store, &keys, "a.2", Role::Follower(0), 0);
        b.announce(&store, &keys, "b.3", Role::Follower(0), 10);
        assert!(!all_hold(&store, &keys, 5, 20));
        a.announce(&store, &keys, "a.2", Role::Follower(5), 30);
        assert!(!all_hold(&store, &keys, 5, 40), "b is still at 0");
        b.announce(&store, &keys, "b.3", Role::Follower(7), 50);
        assert!(all_hold(&store, &keys, 5, 60));
        assert!(!all_hold(&store, &keys, 6, 60), "a is at 5");
    }

    #[test]
    fn the_first_started_live_candidate_should_lead() {
        let store = MemStore::default();
        let keys = Keys::new("t");
        let [mut main, mut worker, mut late] = [(); 3].map(|()| Announcer::default());
        assert_eq!(first_candidate(&store, &keys, 0), None);
        worker.announce(&store, &keys, "w.10", Role::Candidate, 0);
        assert_eq!(first_candidate(&store, &keys, 0).as_deref(), Some("w.10"));
        main.announce(&store, &keys, "m.9", Role::Candidate, 5);
        late.announce(&store, &keys, "x.11", Role::Candidate, 5);
        assert_eq!(first_candidate(&store, &keys, 10).as_deref(), Some("m.9"));
        worker.announce(&store, &keys, "w.10", Role::Follower(0), 20);
        // The main VM goes silent: the next candidate takes its place.
        let mut now = 20;
        while now <= TTL_MS + REFRESH_MS {
            late.announce(&store, &keys, "x.11", Role::Candidate, now);
            worker.announce(&store, &keys, "w.10", Role::Follower(3), now);
            now += 50;
        }
        assert_eq!(first_candidate(&store, &keys, now).as_deref(), Some("x.11"));
    }

    #[test]
    fn gone_vms_stop_counting_and_lines_are_rewritten_sparingly() {
        let store = MemStore::default();
        let keys = Keys::new("t");
        let (mut a, mut b) = (Announcer::default(), Announcer::default());
        a.announce(&store, &keys, "a.1", Role::Follower(9), 0);
        b.announce(&store, &keys, "b.2", Role::Follower(1), 0);
        // b goes silent; a keeps announcing.
        let mut now = 0;
        while now <= TTL_MS + REFRESH_MS {
            a.announce(&store, &keys, "a.1", Role::Follower(9), now);
            now += 50;
        }
        assert!(all_hold(&store, &keys, 9, now), "b aged out");
        a.announce(&store, &keys, "a.1", Role::Follower(9), now);
        let (_, cas) = store.get(&keys.followers);
        a.announce(&store, &keys, "a.1", Role::Follower(9), now + 1);
        assert_eq!(
            store.get(&keys.followers).1,
            cas,
            "no write when nothing changed"
        );
        a.withdraw(&store, &keys, "a.1", now);
        assert!(!all_hold(&store, &keys, 0, now), "nobody left");
    }
}
