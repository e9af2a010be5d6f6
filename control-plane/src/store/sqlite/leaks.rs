//! The leak policy and the spike check's rows in the SQLite store
//! (crate::store::leaks): writes in the writer's transaction, reads on a
//! reader.

use super::queries::{id_of, sql_id};
use super::SqliteStore;
use crate::store::leaks::{HourCount, LeakPolicy, LeakStore};
use crate::store::StoreFuture;
use keygate::ids::{KeyId, OrgId};
use rusqlite::{params, OptionalExtension};

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn count(raw: i64) -> u64 {
    u64::try_from(raw).unwrap_or(0)
}

impl LeakStore for SqliteStore {
    fn leak_policy(&self, org: OrgId) -> StoreFuture<'_, Option<LeakPolicy>> {
        self.read(move |conn| {
            let name: Option<String> = conn
                .prepare_cached(
                    "SELECT COALESCE(s.leak_policy, 'revoke') FROM tenants AS t \
                     LEFT JOIN tenant_settings AS s ON s.tenant_id = t.id WHERE t.id = ?1",
                )?
                .query_row([sql_id(org.0)], |row| row.get(0))
                .optional()?;
            Ok(name.map(|n| LeakPolicy::named(&n).unwrap_or_default()))
        })
    }

    fn set_leak_policy(&self, org: OrgId, policy: LeakPolicy) -> StoreFuture<'_, bool> {
        self.write(move |conn| {
            let changed = conn
                .prepare_cached(
                    "INSERT INTO tenant_settings (tenant_id, leak_policy) \
                     SELECT id, ?1 FROM tenants WHERE id = ?2 \
                     ON CONFLICT (tenant_id) DO UPDATE SET leak_policy = excluded.leak_policy",
                )?
                .execute(params![policy.as_str(), sql_id(org.0)])?;
            Ok(changed > 0)
        })
    }

    fn busy_keys(&self, hour: u64, min: u64) -> StoreFuture<'_, Vec<HourCount>> {
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT u.key_id, u.tenant_id, SUM(u.count) FROM usage_minute AS u \
                 JOIN api_keys AS k ON k.id = u.key_id AND k.revoked_at IS NULL \
                 LEFT JOIN key_spikes AS s ON s.key_id = u.key_id \
                 WHERE u.minute >= ?1 AND u.minute < ?2 AND (s.hour IS NULL OR s.hour < ?1) \
                 GROUP BY u.key_id, u.tenant_id HAVING SUM(u.count) >= ?3",
            )?;
            let end = hour.saturating_add(3600);
            let rows = statement
                .query_map(params![int(hour), int(end), int(min)], |row| {
                    Ok(HourCount {
                        key_id: KeyId(id_of(row, 0)?),
                        org: OrgId(id_of(row, 1)?),
                        requests: count(row.get(2)?),
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
    }

    fn requests_between(&self, key: KeyId, from: u64, to: u64) -> StoreFuture<'_, u64> {
        self.read(move |conn| {
            let total: i64 = conn
                .prepare_cached(
                    "SELECT (SELECT COALESCE(SUM(count), 0) FROM usage_minute \
                             WHERE key_id = ?1 AND minute >= ?2 AND minute < ?3) \
                          + (SELECT COALESCE(SUM(count), 0) FROM usage_hour \
                             WHERE key_id = ?1 AND hour >= ?2 AND hour < ?3)",
                )?
                .query_row(params![sql_id(key.0), int(from), int(to)], |row| row.get(0))?;
            Ok(count(total))
        })
    }

    fn claim_spike(&self, key: KeyId, hour: u64) -> StoreFuture<'_, bool> {
        self.write(move |conn| {
            let claimed = conn
                .prepare_cached(
                    "INSERT INTO key_spikes (key_id, hour) VALUES (?1, ?2) \
                     ON CONFLICT (key_id) DO UPDATE SET hour = excluded.hour \
                     WHERE key_spikes.hour < excluded.hour",
                )?
                .execute(params![sql_id(key.0), int(hour)])?;
            Ok(claimed > 0)
        })
    }
}
