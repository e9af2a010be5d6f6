//! Which table version every following VM holds, so the leader knows when
//! the snapshot pages in shared data are no longer needed.
//!
//! One shared-data value (`<ns>followers`), lines of
//! `"<owner> <version> <seen ms>"`, updated by CAS. A VM that holds a table
//! announces its version when it changes and at least every
//! [`REFRESH_MS`]; lines not refreshed for [`TTL_MS`] are dropped (the VM is
//! gone). A VM that appears after the pages were released finds no snapshot
//! and asks the leader for a fresh one (sync's resync), so releasing early
//! costs a fetch, never a wrong table.

use crate::sync::{Keys, Store};

/// A follower re-announces itself this often.
pub const REFRESH_MS: u64 = 1000;
/// A line older than this belongs to a VM that is gone.
const TTL_MS: u64 = 3 * REFRESH_MS;
/// CAS attempts per announcement (others may write at the same moment).
const ATTEMPTS: usize = 4;

/// One VM's line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Line<'a> {
    owner: &'a str,
    version: u64,
    seen_ms: u64,
}

fn parse(text: &str) -> impl Iterator<Item = Line<'_>> {
    text.lines().filter_map(|line| {
        let mut words = line.split(' ');
        let owner = words.next()?;
        let version = words.next()?.parse().ok()?;
        let seen_ms = words.next()?.parse().ok()?;
        Some(Line {
            owner,
            version,
            seen_ms,
        })
    })
}

fn is_live(line: &Line<'_>, now_ms: u64) -> bool {
    line.seen_ms.saturating_add(TTL_MS) >= now_ms
}

/// What this VM last announced, to announce only when needed.
#[derive(Debug, Clone, Default)]
pub struct Announcer {
    last: Option<(u64, u64)>,
}

impl Announcer {
    /// Records that `owner`'s table is at `version`, if it changed or the
    /// last announcement is getting old.
    pub fn announce(
        &mut self,
        store: &impl Store,
        keys: &Keys,
        owner: &str,
        version: u64,
        now_ms: u64,
    ) {
        let fresh = self
            .last
            .is_some_and(|(v, at)| v == version && now_ms < at.saturating_add(REFRESH_MS));
        if !fresh && write(store, keys, owner, Some(version), now_ms) {
            self.last = Some((version, now_ms));
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
fn write(store: &impl Store, keys: &Keys, owner: &str, version: Option<u64>, now_ms: u64) -> bool {
    for _ in 0..ATTEMPTS {
        let (value, cas) = store.get(&keys.followers);
        let text = String::from_utf8_lossy(&value);
        let mut out = String::with_capacity(text.len() + 40);
        for line in parse(&text).filter(|l| l.owner != owner && is_live(l, now_ms)) {
            out.push_str(&format!(
                "{} {} {}\n",
                line.owner, line.version, line.seen_ms
            ));
        }
        if let Some(version) = version {
            out.push_str(&format!("{owner} {version} {now_ms}\n"));
        }
        if store.set(&keys.followers, out.as_bytes(), cas) {
            return true;
        }
    }
    false
}

/// True when at least one follower is live and every live one holds
/// `version` or newer.
pub fn all_hold(store: &impl Store, keys: &Keys, version: u64, now_ms: u64) -> bool {
    let (value, _) = store.get(&keys.followers);
    let text = String::from_utf8_lossy(&value);
    let mut live = parse(&text).filter(|l| is_live(l, now_ms)).peekable();
    live.peek().is_some() && live.all(|l| l.version >= version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::tests::MemStore;

    #[test]
    fn releases_only_when_every_live_follower_holds_the_version() {
        let store = MemStore::default();
        let keys = Keys::new("t");
        let (mut a, mut b) = (Announcer::default(), Announcer::default());
        assert!(!all_hold(&store, &keys, 5, 0), "nobody announced yet");
        a.announce(&store, &keys, "a.1", 0, 0);
        b.announce(&store, &keys, "b.2", 0, 10);
        assert!(!all_hold(&store, &keys, 5, 20));
        a.announce(&store, &keys, "a.1", 5, 30);
        assert!(!all_hold(&store, &keys, 5, 40), "b is still at 0");
        b.announce(&store, &keys, "b.2", 7, 50);
        assert!(all_hold(&store, &keys, 5, 60));
        assert!(!all_hold(&store, &keys, 6, 60), "a is at 5");
    }

    #[test]
    fn gone_followers_stop_counting_and_lines_are_rewritten_sparingly() {
        let store = MemStore::default();
        let keys = Keys::new("t");
        let (mut a, mut b) = (Announcer::default(), Announcer::default());
        a.announce(&store, &keys, "a.1", 9, 0);
        b.announce(&store, &keys, "b.2", 1, 0);
        // b goes silent; a keeps announcing.
        let mut now = 0;
        while now <= TTL_MS + REFRESH_MS {
            a.announce(&store, &keys, "a.1", 9, now);
            now += 50;
        }
        assert!(all_hold(&store, &keys, 9, now), "b aged out");
        a.announce(&store, &keys, "a.1", 9, now);
        let (_, cas) = store.get(&keys.followers);
        a.announce(&store, &keys, "a.1", 9, now + 1);
        assert_eq!(
            store.get(&keys.followers).1,
            cas,
            "no write when nothing changed"
        );
        a.withdraw(&store, &keys, "a.1", now);
        assert!(!all_hold(&store, &keys, 0, now), "nobody left");
    }
}
