-- Webhooks and the audit log (SPEC §11). A webhook's secret is kept to sign
-- its deliveries (HMAC needs it) and never leaves the database again after
-- the answer that created it. Deliveries are the durable queue the worker
-- sends from: `pending` rows with `next_attempt_at` due are claimed (the
-- claim moves `next_attempt_at` past the send's timeout, a lease), then end
-- `delivered` or `failed`. `expiry_notice_for`: the `expires_at` a
-- `key.expiring` event was queued for (once per expiry).
CREATE TABLE IF NOT EXISTS webhooks (
    id         TEXT    PRIMARY KEY,
    tenant_id  INTEGER NOT NULL REFERENCES tenants (id),
    url        TEXT    NOT NULL,
    events     TEXT    NOT NULL,
    secret     TEXT    NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE INDEX IF NOT EXISTS webhooks_by_tenant ON webhooks (tenant_id, created_at);

CREATE TABLE IF NOT EXISTS webhook_deliveries (
    seq             INTEGER PRIMARY KEY,
    id              TEXT    NOT NULL UNIQUE,
    webhook_id      TEXT    NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    tenant_id       INTEGER NOT NULL,
    event_id        TEXT    NOT NULL,
    event_type      TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    attempts        INTEGER NOT NULL,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    next_attempt_at INTEGER,
    finished_at     INTEGER
) STRICT;

CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, seq);
CREATE INDEX IF NOT EXISTS webhook_deliveries_finished ON webhook_deliveries (finished_at)
    WHERE finished_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS audit_log (
    seq         INTEGER PRIMARY KEY,
    tenant_id   INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    actor       TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    key_id      INTEGER,
    external_id TEXT,
    webhook_id  TEXT,
    changes     TEXT    NOT NULL
) STRICT;

CREATE INDEX IF NOT EXISTS audit_log_by_tenant ON audit_log (tenant_id, seq);
CREATE INDEX IF NOT EXISTS audit_log_by_time ON audit_log (at);

ALTER TABLE api_keys ADD COLUMN expiry_notice_for INTEGER;
