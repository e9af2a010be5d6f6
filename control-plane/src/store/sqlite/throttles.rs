//! The throttles of the SQLite store (crate::store::throttles): each take
//! reads, applies its rule and writes in the writer's transaction, one at a
//! time.

use super::SqliteStore;
use crate::store::throttles::{Entry, Rule, Throttles, FORGET_AFTER_MS};
use crate::store::{StoreError, StoreFuture};
use rusqlite::{params, Connection, OptionalExtension};

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn entry(conn: &Connection, scope: &str, key: &str) -> Result<Option<Entry>, StoreError> {
    let found = conn
        .prepare_cached("SELECT count, until_ms FROM throttles WHERE scope = ?1 AND key = ?2")?
        .query_row([scope, key], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
        })
        .optional()?;
    Ok(found.map(|(count, until)| Entry {
        count: u32::try_from(count).unwrap_or(u32::MAX),
        until: u64::try_from(until).unwrap_or(0),
    }))
}

impl Throttles for SqliteStore {
    fn take(
        &self,
        scope: &'static str,
        key: String,
        rule: Rule,
        now: u64,
    ) -> StoreFuture<'_, Result<(), u64>> {
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM throttles WHERE until_ms < ?1")?
                .execute([int(now.saturating_sub(FORGET_AFTER_MS))])?;
            let (next, outcome) = rule.take(entry(conn, scope, &key)?, now);
            if let Some(next) = next {
                conn.prepare_cached(
                    "INSERT INTO throttles (scope, key, count, until_ms) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (scope, key) DO UPDATE SET \
                     count = excluded.count, until_ms = excluded.until_ms",
                )?
                .execute(params![scope, key, next.count, int(next.until)])?;
            }
            Ok(outcome)
        })
    }

    fn clear(&self, scope: &'static str, keys: Vec<String>) -> StoreFuture<'_, ()> {
        self.write(move |conn| {
            let mut delete =
                conn.prepare_cached("DELETE FROM throttles WHERE scope = ?1 AND key = ?2")?;
            for key in &keys {
                delete.execute([scope, key.as_str()])?;
            }
            Ok(())
        })
    }
}
