//! The webhook, delivery-queue and audit SQL of the PostgreSQL store
//! (crate::store::events): writes in one transaction each, reads on a
//! pooled connection. Claims skip rows another replica holds locked.

use super::queries::{int, sql_id, Write};
use super::{connection, PostgresStore};
use crate::store::events::{
    events_of, events_text, Attempt, AuditEntry, AuditPage, AuditQuery, Claim, Delivery,
    DeliveryStatus, DueDelivery, Event, EventStore, ExpiringKey, Webhook, AUDIT_RETENTION,
    DELIVERY_RETENTION,
};
use crate::store::{StoreError, StoreFuture};
use keygate::ids::{KeyId, OrgId};
use tokio_postgres::Row;

fn id_of(raw: i64) -> u64 {
    u64::from_ne_bytes(raw.to_ne_bytes())
}

fn uint(raw: i64) -> u64 {
    u64::try_from(raw).unwrap_or(0)
}

fn opt_uint(row: &Row, column: usize) -> Result<Option<u64>, StoreError> {
    Ok(row.try_get::<_, Option<i64>>(column)?.map(uint))
}

fn webhook_of(row: &Row) -> Result<Webhook, StoreError> {
    Ok(Webhook {
        id: row.try_get(0)?,
        org: OrgId(id_of(row.try_get(1)?)),
        url: row.try_get(2)?,
        events: events_of(row.try_get(3)?),
        secret: row.try_get(4)?,
        created_at: uint(row.try_get(5)?),
    })
}

fn delivery_of(row: &Row) -> Result<Delivery, StoreError> {
    Ok(Delivery {
        id: row.try_get(0)?,
        webhook_id: row.try_get(1)?,
        event_id: row.try_get(2)?,
        event_type: row.try_get(3)?,
        status: DeliveryStatus::parse(row.try_get(4)?),
        attempts: uint(row.try_get(5)?),
        last_status: row
            .try_get::<_, Option<i64>>(6)?
            .and_then(|s| u16::try_from(s).ok()),
        last_error: row.try_get(7)?,
        created_at: uint(row.try_get(8)?),
        next_attempt_at: opt_uint(row, 9)?,
        finished_at: opt_uint(row, 10)?,
    })
}

fn audit_of(row: &Row) -> Result<AuditEntry, StoreError> {
    let changes: &str = row.try_get(9)?;
    Ok(AuditEntry {
        seq: uint(row.try_get(0)?),
        org: OrgId(id_of(row.try_get(1)?)),
        at: uint(row.try_get(2)?),
        actor: row.try_get(3)?,
        source: row.try_get(4)?,
        action: row.try_get(5)?,
        key_id: row.try_get::<_, Option<i64>>(6)?.map(|k| KeyId(id_of(k))),
        external_id: row.try_get(7)?,
        webhook_id: row.try_get(8)?,
        changes: serde_json::from_str(changes).unwrap_or(serde_json::Value::Null),
    })
}

fn due_of(row: &Row) -> Result<DueDelivery, StoreError> {
    Ok(DueDelivery {
        id: row.try_get(0)?,
        org: OrgId(id_of(row.try_get(1)?)),
        url: row.try_get(2)?,
        secret: row.try_get(3)?,
        event_id: row.try_get(4)?,
        event_type: row.try_get(5)?,
        payload: row.try_get(6)?,
        attempts: uint(row.try_get(7)?),
        created_at: uint(row.try_get(8)?),
    })
}

fn expiring_of(row: &Row) -> Result<ExpiringKey, StoreError> {
    Ok(ExpiringKey {
        org: OrgId(id_of(row.try_get(0)?)),
        key_id: KeyId(id_of(row.try_get(1)?)),
        name: row.try_get(2)?,
        display_prefix: row.try_get(3)?,
        external_id: row.try_get(4)?,
        expires_at: uint(row.try_get(5)?),
    })
}

fn count(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Per due tenant, its oldest due deliveries (locked, skipping those
/// another replica holds), then the oldest of those.
async fn claim(w: &Write<'_>, claim: &Claim) -> Result<Vec<DueDelivery>, StoreError> {
    let skip: Vec<i64> = claim.skip.iter().map(|org| sql_id(org.0)).collect();
    let rows =
        w.tx.query(
            "WITH picked AS (SELECT p.seq FROM \
              (SELECT DISTINCT tenant_id FROM webhook_deliveries \
               WHERE status = 'pending' AND next_attempt_at <= $1 AND tenant_id <> ALL($5)) t \
              CROSS JOIN LATERAL (SELECT seq, next_attempt_at FROM webhook_deliveries d \
               WHERE d.tenant_id = t.tenant_id AND status = 'pending' AND next_attempt_at <= $1 \
               ORDER BY next_attempt_at, seq LIMIT $4 FOR UPDATE SKIP LOCKED) p \
              ORDER BY p.next_attempt_at, p.seq LIMIT $3) \
             UPDATE webhook_deliveries d SET next_attempt_at = $2 FROM webhooks w \
             WHERE w.id = d.webhook_id AND d.seq IN (SELECT seq FROM picked) \
             RETURNING d.id, d.tenant_id, w.url, w.secret, d.event_id, d.event_type, d.payload, \
             d.attempts, d.created_at",
            &[
                &int(claim.now)?,
                &int(claim.lease_until)?,
                &int(claim.limit as u64)?,
                &int(claim.per_tenant as u64)?,
                &skip,
            ],
        )
        .await?;
    rows.iter().map(due_of).collect()
}

async fn record(w: &Write<'_>, id: &str, attempt: &Attempt) -> Result<(), StoreError> {
    let status = match (&attempt.error, attempt.retry_at) {
        (None, _) => DeliveryStatus::Delivered,
        (Some(_), Some(_)) => DeliveryStatus::Pending,
        (Some(_), None) => DeliveryStatus::Failed,
    };
    let finished = match status {
        DeliveryStatus::Pending => None,
        _ => Some(int(attempt.at)?),
    };
    let retry = attempt.retry_at.map(int).transpose()?;
    let code = attempt.status.map(i64::from);
    w.tx.execute(
        "UPDATE webhook_deliveries SET status = $2, attempts = attempts + 1, last_status = $3, \
         last_error = $4, next_attempt_at = $5, finished_at = $6 WHERE id = $1",
        &[
            &id,
            &status.as_str(),
            &code,
            &attempt.error,
            &retry,
            &finished,
        ],
    )
    .await?;
    Ok(())
}

async fn audit_page(
    client: &deadpool_postgres::Object,
    org: OrgId,
    query: &AuditQuery,
) -> Result<AuditPage, StoreError> {
    let before = query.before.map(int).transpose()?;
    let key = query.key_id.map(|k| sql_id(k.0));
    let limit = int(query.limit.max(1) as u64 + 1)?;
    let rows = client
        .query(
            "SELECT seq, tenant_id, at, actor, source, action, key_id, external_id, webhook_id, \
             changes FROM audit_log WHERE tenant_id = $1 AND ($2::bigint IS NULL OR seq < $2) \
             AND ($3::bigint IS NULL OR key_id = $3) AND ($4::text IS NULL OR external_id = $4) \
             AND ($5::text IS NULL OR action = $5) ORDER BY seq DESC LIMIT $6",
            &[
                &sql_id(org.0),
                &before,
                &key,
                &query.external_id,
                &query.action,
                &limit,
            ],
        )
        .await?;
    let entries = rows.iter().map(audit_of).collect::<Result<Vec<_>, _>>()?;
    Ok(AuditPage::of(query, entries))
}

async fn prune(w: &Write<'_>, now: u64) -> Result<usize, StoreError> {
    let audit = int(now.saturating_sub(AUDIT_RETENTION))?;
    let deliveries = int(now.saturating_sub(DELIVERY_RETENTION))?;
    let a =
        w.tx.execute("DELETE FROM audit_log WHERE at < $1", &[&audit])
            .await?;
    let d =
        w.tx.execute(
            "DELETE FROM webhook_deliveries WHERE finished_at < $1",
            &[&deliveries],
        )
        .await?;
    Ok(count(a + d))
}

impl EventStore for PostgresStore {
    fn create_webhook(&self, hook: Webhook) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |w| {
            Box::pin(async move {
                w.tx.execute(
                    "INSERT INTO webhooks (id, tenant_id, url, events, secret, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    &[
                        &hook.id,
                        &sql_id(hook.org.0),
                        &hook.url,
                        &events_text(&hook.events),
                        &hook.secret,
                        &int(hook.created_at)?,
                    ],
                )
                .await?;
                Ok(())
            })
        }))
    }

    fn webhooks(&self, org: OrgId) -> StoreFuture<'_, Vec<Webhook>> {
        Box::pin(async move {
            let client = connection(&self.inner.pool).await?;
            let rows = client
                .query(
                    "SELECT id, tenant_id, url, events, secret, created_at FROM webhooks \
                     WHERE tenant_id = $1 ORDER BY created_at, id",
                    &[&sql_id(org.0)],
                )
                .await?;
            rows.iter().map(webhook_of).collect()
        })
    }

    fn delete_webhook(&self, org: OrgId, id: String) -> StoreFuture<'_, bool> {
        Box::pin(self.write(move |w| {
            Box::pin(async move {
                let gone =
                    w.tx.execute(
                        "DELETE FROM webhooks WHERE tenant_id = $1 AND id = $2",
                        &[&sql_id(org.0), &id],
                    )
                    .await?;
                Ok(gone > 0)
            })
        }))
    }

    fn enqueue(&self, event: Event) -> StoreFuture<'_, usize> {
        Box::pin(self.write(move |w| {
            Box::pin(async move {
                let queued =
                    w.tx.execute(
                        "INSERT INTO webhook_deliveries (id, webhook_id, tenant_id, event_id, \
                         event_type, payload, status, attempts, created_at, next_attempt_at) \
                         SELECT 'dlv_' || substr($2, 5) || substr(w.id, 4), w.id, w.tenant_id, \
                         $2, $3, $4, 'pending', 0, $5, $5 FROM webhooks w \
                         WHERE w.tenant_id = $1 AND (' ' || w.events || ' ') LIKE ('% ' || $3 || ' %')",
                        &[
                            &sql_id(event.org.0),
                            &event.id,
                            &event.kind,
                            &event.payload,
                            &int(event.created_at)?,
                        ],
                    )
                    .await?;
                Ok(count(queued))
            })
        }))
    }

    fn claim_due(&self, request: Claim) -> StoreFuture<'_, Vec<DueDelivery>> {
        Box::pin(self.write(move |w| Box::pin(async move { claim(w, &request).await })))
    }

    fn record_attempt(&self, id: String, attempt: Attempt) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |w| Box::pin(async move { record(w, &id, &attempt).await })))
    }

    fn deliveries(
        &self,
        org: OrgId,
        webhook: String,
        limit: usize,
    ) -> StoreFuture<'_, Option<Vec<Delivery>>> {
        Box::pin(async move {
            let client = connection(&self.inner.pool).await?;
            let known = client
                .query_opt(
                    "SELECT 1 FROM webhooks WHERE tenant_id = $1 AND id = $2",
                    &[&sql_id(org.0), &webhook],
                )
                .await?;
            if known.is_none() {
                return Ok(None);
            }
            let rows = client
                .query(
                    "SELECT id, webhook_id, event_id, event_type, status, attempts, last_status, \
                     last_error, created_at, next_attempt_at, finished_at FROM webhook_deliveries \
                     WHERE webhook_id = $1 ORDER BY seq DESC LIMIT $2",
                    &[&webhook, &int(limit as u64)?],
                )
                .await?;
            rows.iter()
                .map(delivery_of)
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
        })
    }

    fn claim_expiring(&self, now: u64, until: u64) -> StoreFuture<'_, Vec<ExpiringKey>> {
        Box::pin(self.write(move |w| {
            Box::pin(async move {
                let rows =
                    w.tx.query(
                        "UPDATE api_keys SET expiry_notice_for = expires_at \
                         WHERE in_table AND revoked_at IS NULL AND expires_at > $1 \
                         AND expires_at <= $2 AND expiry_notice_for IS DISTINCT FROM expires_at \
                         RETURNING tenant_id, id, name, display_prefix, external_id, expires_at",
                        &[&int(now)?, &int(until)?],
                    )
                    .await?;
                rows.iter().map(expiring_of).collect()
            })
        }))
    }

    fn append_audit(&self, entry: AuditEntry) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |w| {
            Box::pin(async move {
                w.tx.execute(
                    "INSERT INTO audit_log (tenant_id, at, actor, source, action, key_id, \
                     external_id, webhook_id, changes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    &[
                        &sql_id(entry.org.0),
                        &int(entry.at)?,
                        &entry.actor,
                        &entry.source,
                        &entry.action,
                        &entry.key_id.map(|k| sql_id(k.0)),
                        &entry.external_id,
                        &entry.webhook_id,
                        &entry.changes.to_string(),
                    ],
                )
                .await?;
                Ok(())
            })
        }))
    }

    fn audit_page(&self, org: OrgId, query: AuditQuery) -> StoreFuture<'_, AuditPage> {
        Box::pin(async move {
            let client = connection(&self.inner.pool).await?;
            audit_page(&client, org, &query).await
        })
    }

    fn prune_events(&self, now: u64) -> StoreFuture<'_, usize> {
        Box::pin(self.write(move |w| Box::pin(prune(w, now))))
    }
}
