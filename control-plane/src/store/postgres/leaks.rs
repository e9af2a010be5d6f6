//! The leak policy and the spike check's rows in the PostgreSQL store
//! (crate::store::leaks): writes in one transaction each, reads on a pooled
//! connection.

use super::queries::{id_of, int, sql_id, uint};
use super::{connection, PostgresStore};
use crate::store::leaks::{HourCount, LeakPolicy, LeakStore};
use crate::store::StoreFuture;
use keygate::ids::{KeyId, OrgId};

impl LeakStore for PostgresStore {
    fn leak_policy(&self, org: OrgId) -> StoreFuture<'_, Option<LeakPolicy>> {
        Box::pin(async move {
            let client = connection(&self.inner.pool).await?;
            let row = client
                .query_opt(
                    "SELECT COALESCE(s.leak_policy, 'revoke') FROM tenants AS t \
                     LEFT JOIN tenant_settings AS s ON s.tenant_id = t.id WHERE t.id = $1",
                    &[&sql_id(org.0)],
                )
                .await?;
            let name: Option<String> = row.map(|r| r.try_get(0)).transpose()?;
            Ok(name.map(|n| LeakPolicy::named(&n).unwrap_or_default()))
        })
    }

    fn set_leak_policy(&self, org: OrgId, policy: LeakPolicy) -> StoreFuture<'_, bool> {
        Box::pin(self.write(move |w| {
            Box::pin(async move {
                let changed =
                    w.tx.execute(
                        "INSERT INTO tenant_settings (tenant_id, leak_policy) \
                         SELECT id, $1 FROM tenants WHERE id = $2 \
                         ON CONFLICT (tenant_id) DO UPDATE SET leak_policy = excluded.leak_policy",
                        &[&policy.as_str(), &sql_id(org.0)],
                    )
                    .await?;
                Ok(changed > 0)
            })
        }))
    }

    fn busy_keys(&self, hour: u64, min: u64) -> StoreFuture<'_, Vec<HourCount>> {
        Box::pin(async move {
            let client = connection(&self.inner.pool).await?;
            let end = hour.saturating_add(3600);
            let rows = client
                .query(
                    "SELECT u.key_id, u.tenant_id, SUM(u.count)::BIGINT FROM usage_minute AS u \
                     JOIN api_keys AS k ON k.id = u.key_id AND k.revoked_at IS NULL \
                     LEFT JOIN key_spikes AS s ON s.key_id = u.key_id \
                     WHERE u.minute >= $1 AND u.minute < $2 AND (s.hour IS NULL OR s.hour < $1) \
                     GROUP BY u.key_id, u.tenant_id HAVING SUM(u.count) >= $3::BIGINT",
                    &[&int(hour)?, &int(end)?, &int(min)?],
                )
                .await?;
            rows.iter()
                .map(|row| {
                    Ok(HourCount {
                        key_id: KeyId(id_of(row, 0)?),
                        org: OrgId(id_of(row, 1)?),
                        requests: uint(row, 2)?,
                    })
                })
                .collect()
        })
    }

    fn requests_between(&self, key: KeyId, from: u64, to: u64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let client = connection(&self.inner.pool).await?;
            let row = client
                .query_one(
                    "SELECT ((SELECT COALESCE(SUM(count), 0) FROM usage_minute \
                              WHERE key_id = $1 AND minute >= $2 AND minute < $3) \
                           + (SELECT COALESCE(SUM(count), 0) FROM usage_hour \
                              WHERE key_id = $1 AND hour >= $2 AND hour < $3))::BIGINT",
                    &[&sql_id(key.0), &int(from)?, &int(to)?],
                )
                .await?;
            uint(&row, 0)
        })
    }

    fn claim_spike(&self, key: KeyId, hour: u64) -> StoreFuture<'_, bool> {
        Box::pin(self.write(move |w| {
            Box::pin(async move {
                let claimed =
                    w.tx.execute(
                        "INSERT INTO key_spikes (key_id, hour) VALUES ($1, $2) \
                         ON CONFLICT (key_id) DO UPDATE SET hour = excluded.hour \
                         WHERE key_spikes.hour < excluded.hour",
                        &[&sql_id(key.0), &int(hour)?],
                    )
                    .await?;
                Ok(claimed > 0)
            })
        }))
    }
}
