//! The feed's answer cache: each encoded answer (a delta from one base, or
//! one snapshot page) built once per version and view, and shared by every
//! request that asks it (SPEC §18).
//!
//! An answer is keyed by everything that decides its bytes: the key set,
//! the view (every key, or a data plane's tenants), `since`, the page's
//! `after` and the version the feed was at when it was asked. The first
//! request of a slot builds it; requests of the same slot arriving
//! meanwhile wait for that build instead of reading the database again (so
//! 10,000 long-polls waking on one change cost one read and one encode).
//! The cache holds at most its budget of body bytes, and
//! [`MAX_ENTRIES`] slots: a newer version drops every slot of an older one,
//! and past the budget the oldest slots go first. A failed build is not
//! kept: the next request of the slot tries again.

use axum::body::Bytes;
use keygate::feed::KeySet;
use keygate::ids::OrgId;
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::OnceCell;

/// Most slots kept, whatever their size (an answer that says "unchanged"
/// holds no bytes).
pub const MAX_ENTRIES: usize = 4096;

/// A built answer: its version and body, or `None` when the feed said the
/// asked version is current.
pub type Answer = Option<(u64, Bytes)>;

/// What one answer is: only a request asking exactly this gets it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Slot {
    /// The database's key set.
    pub key_set: KeySet,
    /// The tenants whose keys the client sees (`None`: every key).
    pub view: Option<Arc<BTreeSet<OrgId>>>,
    /// The client's base version (0: a snapshot page).
    pub since: u64,
    /// A snapshot page starts after this hash.
    pub after: Option<[u8; 32]>,
    /// The feed's version when the answer was asked (the answer's own
    /// version is this or later).
    pub version: u64,
}

struct Entry {
    cell: Arc<OnceCell<Answer>>,
    /// Body bytes accounted for this slot (0 until built).
    bytes: usize,
    /// Insertion order: the lowest goes first.
    order: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Slot, Entry>,
    bytes: usize,
    /// The newest version a slot was asked at.
    newest: u64,
    next: u64,
}

impl Inner {
    /// Drops every slot of a version older than `version`.
    fn move_to(&mut self, version: u64) {
        if version <= self.newest {
            return;
        }
        self.newest = version;
        self.entries.retain(|slot, _| slot.version >= version);
        self.bytes = self.entries.values().map(|e| e.bytes).sum();
    }

    /// Drops the oldest slots while over `budget` bytes or [`MAX_ENTRIES`].
    fn shrink(&mut self, budget: usize) {
        while self.bytes > budget || self.entries.len() > MAX_ENTRIES {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.order)
                .map(|(slot, _)| slot.clone());
            let Some(entry) = oldest.and_then(|slot| self.entries.remove(&slot)) else {
                return;
            };
            self.bytes = self.bytes.saturating_sub(entry.bytes);
        }
    }
}

/// Encoded feed answers, shared by every request of the same slot.
pub struct AnswerCache {
    budget: usize,
    inner: Mutex<Inner>,
}

impl AnswerCache {
    /// A cache of at most `budget` body bytes.
    pub fn new(budget: usize) -> AnswerCache {
        AnswerCache {
            budget,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Body bytes held now.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Whether building `bytes` more for `version` ahead of any request is
    /// worth it: no newer version was asked and they fit in the budget.
    pub fn has_room(&self, version: u64, bytes: usize) -> bool {
        let inner = self.lock();
        version >= inner.newest && inner.bytes.saturating_add(bytes) <= self.budget
    }

    /// The answer of `slot`: the one built already or being built, else the
    /// one `build` makes (kept for the next requests of the slot).
    pub async fn get_or_build<E, F, Fut>(&self, slot: &Slot, build: F) -> Result<Answer, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Answer, E>>,
    {
        let cell = self.cell(slot);
        let built = cell.get_or_try_init(build).await.cloned();
        let mut inner = self.lock();
        let inner = &mut *inner;
        let ours = inner
            .entries
            .get_mut(slot)
            .filter(|e| Arc::ptr_eq(&e.cell, &cell));
        match (&built, ours) {
            (Ok(answer), Some(entry)) if entry.bytes == 0 => {
                entry.bytes = answer.as_ref().map_or(0, |(_, body)| body.len());
                inner.bytes = inner.bytes.saturating_add(entry.bytes);
                inner.shrink(self.budget);
            }
            (Err(_), Some(entry)) if !entry.cell.initialized() => {
                inner.entries.remove(slot);
            }
            _ => {}
        }
        built
    }

    /// The cell of `slot`, made empty if it has none.
    fn cell(&self, slot: &Slot) -> Arc<OnceCell<Answer>> {
        let mut inner = self.lock();
        inner.move_to(slot.version);
        let order = inner.next;
        inner.next = order.wrapping_add(1);
        let entry = inner.entries.entry(slot.clone()).or_insert_with(|| Entry {
            cell: Arc::default(),
            bytes: 0,
            order,
        });
        let cell = Arc::clone(&entry.cell);
        inner.shrink(self.budget);
        cell
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn slot(since: u64, version: u64) -> Slot {
        Slot {
            key_set: KeySet([1; 16]),
            view: None,
            since,
            after: None,
            version,
        }
    }

    fn body(version: u64, size: usize) -> Answer {
        Some((version, Bytes::from(vec![version as u8; size])))
    }

    /// The answer of `slot`, building `version`'s body of `size` bytes
    /// (counted in `builds`) if it is not cached.
    async fn get(cache: &AnswerCache, slot: &Slot, size: usize, builds: &AtomicUsize) -> Answer {
        let version = slot.version;
        cache
            .get_or_build(slot, || async {
                builds.fetch_add(1, Ordering::SeqCst);
                Ok::<_, ()>(body(version, size))
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn concurrent_asks_of_one_slot_build_once() {
        let cache = Arc::new(AnswerCache::new(1 << 20));
        let builds = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::watch::channel(false);
        let asks = (0..100).map(|_| {
            let (cache, builds) = (Arc::clone(&cache), Arc::clone(&builds));
            let mut released = released.clone();
            tokio::spawn(async move {
                cache
                    .get_or_build(&slot(3, 4), || async move {
                        builds.fetch_add(1, Ordering::SeqCst);
                        let _ = released.wait_for(|r| *r).await;
                        Ok::<_, ()>(body(4, 10))
                    })
                    .await
            })
        });
        let asks: Vec<_> = asks.collect();
        tokio::task::yield_now().await;
        release.send_replace(true);
        for ask in asks {
            assert_eq!(ask.await.unwrap(), Ok(body(4, 10)));
        }
        assert_eq!(builds.load(Ordering::SeqCst), 1);
        assert_eq!(cache.bytes(), 10);
    }

    #[tokio::test]
    async fn never_serves_another_key_set_view_since_page_or_version() {
        let cache = AnswerCache::new(1 << 20);
        let builds = AtomicUsize::new(0);
        let base = slot(0, 5);
        let tenants = |ids: &[u64]| Some(Arc::new(ids.iter().map(|&i| OrgId(i)).collect()));
        let others = [
            Slot {
                key_set: KeySet([2; 16]),
                ..base.clone()
            },
            Slot {
                view: tenants(&[7]),
                ..base.clone()
            },
            Slot {
                view: tenants(&[7, 8]),
                ..base.clone()
            },
            Slot {
                since: 2,
                ..base.clone()
            },
            Slot {
                after: Some([9; 32]),
                ..base.clone()
            },
        ];
        get(&cache, &base, 10, &builds).await;
        for (n, other) in others.iter().enumerate() {
            get(&cache, other, 10, &builds).await;
            assert_eq!(builds.load(Ordering::SeqCst), n + 2, "{other:?}");
        }
        get(&cache, &base, 10, &builds).await;
        get(&cache, &others[1], 10, &builds).await;
        assert_eq!(builds.load(Ordering::SeqCst), 6, "the same slot is shared");
        let newer = slot(0, 6);
        assert_eq!(get(&cache, &newer, 10, &builds).await, body(6, 10));
        assert_eq!(builds.load(Ordering::SeqCst), 7);
    }

    #[tokio::test]
    async fn a_newer_version_drops_the_older_ones() {
        let cache = AnswerCache::new(1 << 20);
        let builds = AtomicUsize::new(0);
        for since in 1..4 {
            get(&cache, &slot(since, 5), 100, &builds).await;
        }
        assert_eq!(cache.bytes(), 300);
        assert!(cache.has_room(5, 100));
        get(&cache, &slot(5, 6), 100, &builds).await;
        assert_eq!(cache.bytes(), 100, "only version 6's answer is left");
        assert!(
            !cache.has_room(5, 1),
            "nothing is built ahead for version 5"
        );
        get(&cache, &slot(1, 5), 100, &builds).await;
        assert_eq!(
            builds.load(Ordering::SeqCst),
            5,
            "version 5 was built again"
        );
    }

    #[tokio::test]
    async fn bytes_stay_within_the_budget_oldest_out_first() {
        let cache = AnswerCache::new(250);
        let builds = AtomicUsize::new(0);
        for since in 1..=5 {
            get(&cache, &slot(since, 9), 100, &builds).await;
            assert!(cache.bytes() <= 250, "{} bytes", cache.bytes());
        }
        assert!(!cache.has_room(9, 100));
        get(&cache, &slot(5, 9), 100, &builds).await;
        get(&cache, &slot(4, 9), 100, &builds).await;
        assert_eq!(builds.load(Ordering::SeqCst), 5, "the newest two are kept");
        get(&cache, &slot(1, 9), 100, &builds).await;
        assert_eq!(builds.load(Ordering::SeqCst), 6, "the oldest went");
        get(&cache, &slot(6, 9), 1000, &builds).await;
        assert!(cache.bytes() <= 250, "a body past the budget is not kept");
    }

    #[tokio::test]
    async fn a_failed_build_is_tried_again() {
        let cache = AnswerCache::new(1 << 20);
        let failed = cache
            .get_or_build(&slot(1, 2), || async { Err::<Answer, _>("down") })
            .await;
        assert_eq!(failed, Err("down"));
        let builds = AtomicUsize::new(0);
        assert_eq!(get(&cache, &slot(1, 2), 4, &builds).await, body(2, 4));
        assert_eq!(builds.load(Ordering::SeqCst), 1);
    }
}
