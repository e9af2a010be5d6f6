//! The key table as a data plane limited to some tenants sees it: the same
//! versions, with the keys of other tenants left out. A snapshot page holds
//! only its tenants' keys (pages with none of them are skipped over, so a
//! page that announces more is never empty); a delta holds only their
//! upserts (and every remove: it names a hash that no longer opens
//! anything, and removing a key a table lacks is a no-op), so a change to
//! another tenant's key reaches the plane as an empty delta that moves its
//! version.

use crate::store::{FeedAnswer, PageAsk, Store, StoreError};
use keygate::feed::FeedOp;
use keygate::ids::OrgId;
use std::collections::BTreeSet;

/// What the feed answers for `since` (a snapshot page after `page.after`),
/// seen by a plane limited to `tenants`.
pub async fn read(
    store: &dyn Store,
    since: u64,
    mut page: PageAsk,
    tenants: &BTreeSet<OrgId>,
) -> Result<FeedAnswer, StoreError> {
    let mut answer = store.feed(since, page).await?;
    let mut kept = Vec::new();
    let mut oldest = u64::MAX;
    loop {
        match answer {
            FeedAnswer::Unchanged(_) => return Ok(answer),
            FeedAnswer::Delta { base, version, ops } => {
                let ops = ops
                    .into_iter()
                    .filter(|op| match op {
                        FeedOp::Upsert(e) => tenants.contains(&e.org_id),
                        FeedOp::Remove(_) => true,
                    })
                    .collect();
                return Ok(FeedAnswer::Delta { base, version, ops });
            }
            FeedAnswer::SnapshotPage {
                version,
                entries,
                more,
            } => {
                // Pages read apart may carry different versions: the page
                // answered carries the oldest, as an assembled table does.
                oldest = oldest.min(version);
                page.after = entries.last().map(|e| e.hash).or(page.after);
                kept.extend(entries.into_iter().filter(|e| tenants.contains(&e.org_id)));
                if !kept.is_empty() || !more {
                    return Ok(FeedAnswer::SnapshotPage {
                        version: oldest,
                        entries: kept,
                        more,
                    });
                }
                answer = store.feed(0, page).await?;
            }
        }
    }
}
