//! Where the fetch loop puts what it fetched: the store, or the table itself.
//!
//! [`crate::engine::fetch::Fetcher`] decides what to ask and what an answer
//! is; a [`Sink`] keeps it. Two modes:
//!
//! - [`SharedDataSink`] publishes every checked body to a process-wide store
//!   (pages, head, delta chain), where follower members load it: the wasm
//!   filter's model, one table per VM;
//! - [`TableSink`] assembles a snapshot page by page straight into a
//!   [`SnapshotBuilder`] and applies a delta to a copy of the current table:
//!   the native module's model, one table per process and no followers, so
//!   no second copy of the bodies is kept.

use crate::engine::shared::{SharedData, SharedKeys};
use crate::engine::sync::{self, PagedSnapshot};
use crate::feed::{FeedError, KeySet, PageSummary};
use crate::table::{Delta, KeyTable, SnapshotBuilder};

/// A snapshot being assembled, as the fetch loop sees it.
pub trait Paging {
    /// Hash of the last key added: the next page starts after it.
    fn after(&self) -> Option<&[u8; 32]>;
    /// The key set of the pages so far (`None` before the first).
    fn key_set(&self) -> Option<KeySet>;
    /// Pages added so far.
    fn pages(&self) -> u32;
    /// Keys added so far.
    fn keys(&self) -> u64;
}

/// What a delta did to what the sink holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// In place; `compact` asks for a fresh snapshot soon.
    Yes { compact: bool },
    /// It does not fit (another base or key set, or nothing to apply it to).
    Refused,
}

/// Keeps what the fetch loop fetched.
pub trait Sink {
    /// A snapshot being assembled.
    type Paging: Paging;
    /// A resync (a delta that does not fit) asks for the snapshot at once
    /// rather than `min_gap_ms` after the last start.
    const RESYNC_AT_ONCE: bool;
    /// Starts a snapshot.
    fn start(&mut self) -> Self::Paging;
    /// Adds a page checked by `crate::feed::check_snapshot_page`.
    fn add_page(
        &mut self,
        paging: &mut Self::Paging,
        body: &[u8],
        page: &PageSummary,
    ) -> Result<(), FeedError>;
    /// Gives up an unfinished snapshot.
    fn abandon(&mut self, paging: Self::Paging);
    /// Puts the whole snapshot in place; returns its version.
    fn finish(&mut self, paging: Self::Paging, now_ms: u64) -> Result<u64, FeedError>;
    /// Applies a decoded delta (`body` its bytes).
    fn delta(&mut self, body: &[u8], delta: &Delta, now_ms: u64) -> Applied;
    /// The version now in place, if any.
    fn version(&self) -> Option<u64>;
    /// A 304: the control plane is reachable.
    fn contact(&mut self, now_ms: u64);
}

impl Paging for PagedSnapshot {
    fn after(&self) -> Option<&[u8; 32]> {
        PagedSnapshot::after(self)
    }
    fn key_set(&self) -> Option<KeySet> {
        PagedSnapshot::key_set(self)
    }
    fn pages(&self) -> u32 {
        PagedSnapshot::pages(self)
    }
    fn keys(&self) -> u64 {
        PagedSnapshot::keys(self)
    }
}

/// Publishes to one feed's values in a store.
pub struct SharedDataSink<'a, S: SharedData> {
    pub store: &'a S,
    pub keys: &'a SharedKeys,
}

impl<S: SharedData> Sink for SharedDataSink<'_, S> {
    type Paging = PagedSnapshot;
    const RESYNC_AT_ONCE: bool = false;

    fn start(&mut self) -> PagedSnapshot {
        PagedSnapshot::start(self.store, self.keys)
    }

    fn add_page(
        &mut self,
        paging: &mut PagedSnapshot,
        body: &[u8],
        page: &PageSummary,
    ) -> Result<(), FeedError> {
        paging.add_page(self.store, self.keys, body, page);
        Ok(())
    }

    fn abandon(&mut self, paging: PagedSnapshot) {
        paging.abandon(self.store, self.keys);
    }

    fn finish(&mut self, paging: PagedSnapshot, now_ms: u64) -> Result<u64, FeedError> {
        sync::publish_snapshot(self.store, self.keys, &paging, now_ms);
        Ok(paging.version())
    }

    fn delta(&mut self, body: &[u8], delta: &Delta, now_ms: u64) -> Applied {
        let published = (delta.version > delta.base)
            .then(|| sync::publish_delta(self.store, self.keys, body, now_ms))
            .flatten();
        match published {
            Some(head) => Applied::Yes {
                compact: head.wants_compaction(),
            },
            // A refused delta leaves the head as it was.
            None => Applied::Refused,
        }
    }

    fn version(&self) -> Option<u64> {
        sync::read_head(self.store, self.keys).map(|h| h.version)
    }

    fn contact(&mut self, now_ms: u64) {
        sync::publish_contact(self.store, self.keys, now_ms);
    }
}

/// A snapshot assembled straight into a table.
pub struct TablePaging {
    builder: SnapshotBuilder,
    after: Option<[u8; 32]>,
    key_set: Option<KeySet>,
    pages: u32,
    keys: u64,
}

impl Paging for TablePaging {
    fn after(&self) -> Option<&[u8; 32]> {
        self.after.as_ref()
    }
    fn key_set(&self) -> Option<KeySet> {
        self.key_set
    }
    fn pages(&self) -> u32 {
        self.pages
    }
    fn keys(&self) -> u64 {
        self.keys
    }
}

/// Builds the next table from the current one (which stays untouched:
/// readers keep using it until the caller swaps in [`TableSink::into_table`]).
pub struct TableSink<'a> {
    current: Option<&'a KeyTable>,
    next: Option<KeyTable>,
}

impl<'a> TableSink<'a> {
    /// A sink over the table in place, if any.
    pub fn new(current: Option<&'a KeyTable>) -> TableSink<'a> {
        TableSink {
            current,
            next: None,
        }
    }

    /// The new table the answer brought, if any.
    pub fn into_table(self) -> Option<KeyTable> {
        self.next
    }
}

impl Sink for TableSink<'_> {
    type Paging = TablePaging;
    const RESYNC_AT_ONCE: bool = true;

    fn start(&mut self) -> TablePaging {
        TablePaging {
            builder: SnapshotBuilder::new(0),
            after: None,
            key_set: None,
            pages: 0,
            keys: 0,
        }
    }

    fn add_page(
        &mut self,
        paging: &mut TablePaging,
        body: &[u8],
        page: &PageSummary,
    ) -> Result<(), FeedError> {
        paging.builder.add_page(body)?;
        paging.key_set = Some(page.key_set);
        paging.pages = paging.pages.saturating_add(1);
        paging.keys = paging
            .keys
            .saturating_add(u64::try_from(page.keys).unwrap_or(u64::MAX));
        paging.after = page.last_hash.or(paging.after);
        Ok(())
    }

    fn abandon(&mut self, _paging: TablePaging) {}

    fn finish(&mut self, paging: TablePaging, _now_ms: u64) -> Result<u64, FeedError> {
        let table = paging.builder.finish()?;
        let version = table.version();
        self.next = Some(table);
        Ok(version)
    }

    fn delta(&mut self, _body: &[u8], delta: &Delta, _now_ms: u64) -> Applied {
        let Some(current) = self.current else {
            return Applied::Refused;
        };
        // Readers keep using `current` while the copy takes the delta.
        let mut next = current.clone();
        match next.apply(delta) {
            Ok(()) => {
                self.next = Some(next);
                Applied::Yes { compact: false }
            }
            Err(_) => Applied::Refused,
        }
    }

    fn version(&self) -> Option<u64> {
        self.current.map(KeyTable::version)
    }

    fn contact(&mut self, _now_ms: u64) {}
}

#[cfg(test)]
#[path = "sink_tests.rs"]
mod tests;
