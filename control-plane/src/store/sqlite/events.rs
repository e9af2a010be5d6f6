//! The webhook, delivery-queue and audit SQL of the SQLite store
//! (crate::store::events): writes in the writer's transaction, reads on a
//! reader.

use super::queries::{id_of, sql_id};
use super::SqliteStore;
use crate::store::events::{
    events_of, events_text, Attempt, AuditEntry, AuditPage, AuditQuery, Claim, Delivery,
    DeliveryStatus, DueDelivery, Event, EventStore, ExpiringKey, Webhook, AUDIT_RETENTION,
    DELIVERY_RETENTION,
};
use crate::store::{StoreError, StoreFuture};
use keygate::ids::{KeyId, OrgId};
use rusqlite::{params, Connection, OptionalExtension, Row};

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn uint(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn opt_uint(row: &Row, column: usize) -> rusqlite::Result<Option<u64>> {
    Ok(row.get::<_, Option<i64>>(column)?.map(uint))
}

fn webhook_of(row: &Row) -> rusqlite::Result<Webhook> {
    Ok(Webhook {
        id: row.get(0)?,
        org: OrgId(id_of(row, 1)?),
        url: row.get(2)?,
        events: events_of(&row.get::<_, String>(3)?),
        secret: row.get(4)?,
        created_at: uint(row.get(5)?),
    })
}

fn delivery_of(row: &Row) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: row.get(0)?,
        webhook_id: row.get(1)?,
        event_id: row.get(2)?,
        event_type: row.get(3)?,
        status: DeliveryStatus::parse(&row.get::<_, String>(4)?),
        attempts: uint(row.get(5)?),
        last_status: row
            .get::<_, Option<i64>>(6)?
            .and_then(|s| u16::try_from(s).ok()),
        last_error: row.get(7)?,
        created_at: uint(row.get(8)?),
        next_attempt_at: opt_uint(row, 9)?,
        finished_at: opt_uint(row, 10)?,
    })
}

fn audit_of(row: &Row) -> rusqlite::Result<AuditEntry> {
    let changes: String = row.get(9)?;
    Ok(AuditEntry {
        seq: uint(row.get(0)?),
        org: OrgId(id_of(row, 1)?),
        at: uint(row.get(2)?),
        actor: row.get(3)?,
        source: row.get(4)?,
        action: row.get(5)?,
        key_id: row
            .get::<_, Option<i64>>(6)?
            .map(|k| KeyId(u64::from_ne_bytes(k.to_ne_bytes()))),
        external_id: row.get(7)?,
        webhook_id: row.get(8)?,
        changes: serde_json::from_str(&changes).unwrap_or(serde_json::Value::Null),
    })
}

fn claim(conn: &Connection, claim: &Claim) -> Result<Vec<DueDelivery>, StoreError> {
    let skip: Vec<i64> = claim.skip.iter().map(|org| sql_id(org.0)).collect();
    let skip = serde_json::to_string(&skip).unwrap_or_else(|_| "[]".into());
    let mut stmt = conn.prepare_cached(
        "UPDATE webhook_deliveries SET next_attempt_at = ?2 WHERE seq IN \
         (SELECT seq FROM (SELECT seq, next_attempt_at, row_number() OVER \
           (PARTITION BY tenant_id ORDER BY next_attempt_at, seq) AS nth \
           FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= ?1 \
           AND tenant_id NOT IN (SELECT value FROM json_each(?5))) \
          WHERE nth <= ?4 ORDER BY next_attempt_at, seq LIMIT ?3) \
         RETURNING id, tenant_id, (SELECT url FROM webhooks w WHERE w.id = webhook_id), \
         (SELECT secret FROM webhooks w WHERE w.id = webhook_id), \
         event_id, event_type, payload, attempts, created_at",
    )?;
    let bounds = params![
        int(claim.now),
        int(claim.lease_until),
        int(claim.limit as u64),
        int(claim.per_tenant as u64),
        skip
    ];
    let rows = stmt.query_map(bounds, |row| {
        Ok(DueDelivery {
            id: row.get(0)?,
            org: OrgId(id_of(row, 1)?),
            url: row.get(2)?,
            secret: row.get(3)?,
            event_id: row.get(4)?,
            event_type: row.get(5)?,
            payload: row.get(6)?,
            attempts: uint(row.get(7)?),
            created_at: uint(row.get(8)?),
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

fn record(conn: &Connection, id: &str, attempt: &Attempt) -> Result<(), StoreError> {
    let status = match (&attempt.error, attempt.retry_at) {
        (None, _) => DeliveryStatus::Delivered,
        (Some(_), Some(_)) => DeliveryStatus::Pending,
        (Some(_), None) => DeliveryStatus::Failed,
    };
    let finished = (status != DeliveryStatus::Pending).then_some(int(attempt.at));
    conn.execute(
        "UPDATE webhook_deliveries SET status = ?2, attempts = attempts + 1, last_status = ?3, \
         last_error = ?4, next_attempt_at = ?5, finished_at = ?6 WHERE id = ?1",
        params![
            id,
            status.as_str(),
            attempt.status.map(i64::from),
            attempt.error,
            attempt.retry_at.map(int),
            finished
        ],
    )?;
    Ok(())
}

fn expiring(conn: &Connection, now: u64, until: u64) -> Result<Vec<ExpiringKey>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "UPDATE api_keys SET expiry_notice_for = expires_at \
         WHERE in_table = 1 AND revoked_at IS NULL AND expires_at > ?1 AND expires_at <= ?2 \
         AND expiry_notice_for IS NOT expires_at \
         RETURNING tenant_id, id, name, display_prefix, external_id, expires_at",
    )?;
    let rows = stmt.query_map(params![int(now), int(until)], |row| {
        Ok(ExpiringKey {
            org: OrgId(id_of(row, 0)?),
            key_id: KeyId(id_of(row, 1)?),
            name: row.get(2)?,
            display_prefix: row.get(3)?,
            external_id: row.get(4)?,
            expires_at: uint(row.get(5)?),
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

fn audit_page(conn: &Connection, org: OrgId, query: &AuditQuery) -> Result<AuditPage, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, tenant_id, at, actor, source, action, key_id, external_id, webhook_id, changes \
         FROM audit_log WHERE tenant_id = ?1 AND (?2 IS NULL OR seq < ?2) \
         AND (?3 IS NULL OR key_id = ?3) AND (?4 IS NULL OR external_id = ?4) \
         AND (?5 IS NULL OR action = ?5) ORDER BY seq DESC LIMIT ?6",
    )?;
    let rows = stmt.query_map(
        params![
            sql_id(org.0),
            query.before.map(int),
            query.key_id.map(|k| sql_id(k.0)),
            query.external_id,
            query.action,
            int(query.limit.max(1) as u64 + 1)
        ],
        audit_of,
    )?;
    let entries = rows.collect::<Result<Vec<_>, _>>()?;
    Ok(AuditPage::of(query, entries))
}

fn prune(conn: &Connection, now: u64) -> Result<usize, StoreError> {
    let audit = conn.execute(
        "DELETE FROM audit_log WHERE at < ?1",
        [int(now.saturating_sub(AUDIT_RETENTION))],
    )?;
    let deliveries = conn.execute(
        "DELETE FROM webhook_deliveries WHERE finished_at < ?1",
        [int(now.saturating_sub(DELIVERY_RETENTION))],
    )?;
    Ok(audit + deliveries)
}

impl EventStore for SqliteStore {
    fn create_webhook(&self, hook: Webhook) -> StoreFuture<'_, ()> {
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO webhooks (id, tenant_id, url, events, secret, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    hook.id,
                    sql_id(hook.org.0),
                    hook.url,
                    events_text(&hook.events),
                    hook.secret,
                    int(hook.created_at)
                ],
            )?;
            Ok(())
        })
    }

    fn webhooks(&self, org: OrgId) -> StoreFuture<'_, Vec<Webhook>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, tenant_id, url, events, secret, created_at FROM webhooks \
                 WHERE tenant_id = ?1 ORDER BY created_at, id",
            )?;
            let rows = stmt.query_map([sql_id(org.0)], webhook_of)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn delete_webhook(&self, org: OrgId, id: String) -> StoreFuture<'_, bool> {
        self.write(move |conn| {
            let gone = conn.execute(
                "DELETE FROM webhooks WHERE tenant_id = ?1 AND id = ?2",
                params![sql_id(org.0), id],
            )?;
            Ok(gone > 0)
        })
    }

    fn enqueue(&self, event: Event) -> StoreFuture<'_, usize> {
        self.write(move |conn| {
            let queued = conn.execute(
                "INSERT INTO webhook_deliveries (id, webhook_id, tenant_id, event_id, event_type, \
                 payload, status, attempts, created_at, next_attempt_at) \
                 SELECT 'dlv_' || substr(?2, 5) || substr(w.id, 4), w.id, w.tenant_id, ?2, ?3, ?4, \
                 'pending', 0, ?5, ?5 FROM webhooks w \
                 WHERE w.tenant_id = ?1 AND (' ' || w.events || ' ') LIKE ('% ' || ?3 || ' %')",
                params![
                    sql_id(event.org.0),
                    event.id,
                    event.kind,
                    event.payload,
                    int(event.created_at)
                ],
            )?;
            Ok(queued)
        })
    }

    fn claim_due(&self, request: Claim) -> StoreFuture<'_, Vec<DueDelivery>> {
        self.write(move |conn| claim(conn, &request))
    }

    fn record_attempt(&self, id: String, attempt: Attempt) -> StoreFuture<'_, ()> {
        self.write(move |conn| record(conn, &id, &attempt))
    }

    fn deliveries(
        &self,
        org: OrgId,
        webhook: String,
        limit: usize,
    ) -> StoreFuture<'_, Option<Vec<Delivery>>> {
        self.read(move |conn| {
            let known = conn
                .query_row(
                    "SELECT 1 FROM webhooks WHERE tenant_id = ?1 AND id = ?2",
                    params![sql_id(org.0), webhook],
                    |_| Ok(()),
                )
                .optional()?;
            if known.is_none() {
                return Ok(None);
            }
            let mut stmt = conn.prepare_cached(
                "SELECT id, webhook_id, event_id, event_type, status, attempts, last_status, \
                 last_error, created_at, next_attempt_at, finished_at FROM webhook_deliveries \
                 WHERE webhook_id = ?1 ORDER BY seq DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![webhook, int(limit as u64)], delivery_of)?;
            Ok(Some(rows.collect::<Result<Vec<_>, _>>()?))
        })
    }

    fn claim_expiring(&self, now: u64, until: u64) -> StoreFuture<'_, Vec<ExpiringKey>> {
        self.write(move |conn| expiring(conn, now, until))
    }

    fn append_audit(&self, entry: AuditEntry) -> StoreFuture<'_, ()> {
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO audit_log (tenant_id, at, actor, source, action, key_id, \
                 external_id, webhook_id, changes) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    sql_id(entry.org.0),
                    int(entry.at),
                    entry.actor,
                    entry.source,
                    entry.action,
                    entry.key_id.map(|k| sql_id(k.0)),
                    entry.external_id,
                    entry.webhook_id,
                    entry.changes.to_string()
                ],
            )?;
            Ok(())
        })
    }

    fn audit_page(&self, org: OrgId, query: AuditQuery) -> StoreFuture<'_, AuditPage> {
        self.read(move |conn| audit_page(conn, org, &query))
    }

    fn prune_events(&self, now: u64) -> StoreFuture<'_, usize> {
        self.write(move |conn| prune(conn, now))
    }
}
