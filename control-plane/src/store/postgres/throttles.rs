//! The throttles of the PostgreSQL store (crate::store::throttles): each
//! take makes sure its row exists, locks it (`FOR UPDATE`), applies its
//! rule and writes, in one transaction, so replicas taking the same row
//! wait for each other.

use super::queries::{int, Write};
use super::{connection, PostgresStore};
use crate::store::throttles::{Entry, Rule, Throttles, FORGET_AFTER_MS};
use crate::store::{StoreError, StoreFuture};

impl Throttles for PostgresStore {
    fn take(
        &self,
        scope: &'static str,
        key: String,
        rule: Rule,
        now: u64,
    ) -> StoreFuture<'_, Result<(), u64>> {
        Box::pin(async move {
            forget(self, now).await?;
            self.write(move |w| take(w, scope, key, rule, now)).await
        })
    }

    fn clear(&self, scope: &'static str, keys: Vec<String>) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |w| {
            Box::pin(async move {
                w.tx.execute(
                    "DELETE FROM throttles WHERE scope = $1 AND key = ANY($2)",
                    &[&scope, &keys],
                )
                .await?;
                Ok(())
            })
        }))
    }
}

/// Drops rows idle for [`FORGET_AFTER_MS`], in a statement of its own that
/// skips rows other transactions hold (so it never waits for them).
async fn forget(store: &PostgresStore, now: u64) -> Result<(), StoreError> {
    let client = connection(&store.inner.pool).await?;
    client
        .execute(
            "DELETE FROM throttles WHERE (scope, key) IN (SELECT scope, key FROM throttles \
             WHERE until_ms < $1 LIMIT 256 FOR UPDATE SKIP LOCKED)",
            &[&int(now.saturating_sub(FORGET_AFTER_MS))?],
        )
        .await?;
    Ok(())
}

/// One attempt on the locked row of `key` (made if absent).
fn take<'a>(
    w: &'a mut Write<'_>,
    scope: &'static str,
    key: String,
    rule: Rule,
    now: u64,
) -> StoreFuture<'a, Result<(), u64>> {
    Box::pin(async move {
        w.tx.execute(
            "INSERT INTO throttles (scope, key, count, until_ms) VALUES ($1, $2, 0, 0) \
                     ON CONFLICT (scope, key) DO NOTHING",
            &[&scope, &key],
        )
        .await?;
        let row =
            w.tx.query_one(
                "SELECT count, until_ms FROM throttles \
                         WHERE scope = $1 AND key = $2 FOR UPDATE",
                &[&scope, &key],
            )
            .await?;
        let (count, until): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        let stored = Entry {
            count: u32::try_from(count).unwrap_or(u32::MAX),
            until: u64::try_from(until).unwrap_or(0),
        };
        let stored = (stored.count > 0).then_some(stored);
        let (next, outcome) = rule.take(stored, now);
        if let Some(next) = next {
            w.tx.execute(
                "UPDATE throttles SET count = $3, until_ms = $4 \
                         WHERE scope = $1 AND key = $2",
                &[&scope, &key, &i64::from(next.count), &int(next.until)?],
            )
            .await?;
        }
        Ok(outcome)
    })
}
