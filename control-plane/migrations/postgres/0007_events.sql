-- Webhooks and the audit log (SPEC §11). A webhook's secret is kept to sign
-- its deliveries (HMAC needs it) and never leaves the database again after
-- the answer that created it. Deliveries are the durable queue the worker
-- sends from: `pending` rows with `next_attempt_at` due are claimed (the
-- claim moves `next_attempt_at` past the send's timeout, a lease), then end
-- `delivered` or `failed`. `expiry_notice_for`: the `expires_at` a
-- `key.expiring` event was queued for (once per expiry).
CREATE TABLE IF NOT EXISTS webhooks (
    id         TEXT    PRIMARY KEY,
    tenant_id  BIGINT NOT NULL REFERENCES tenants (id),
    url        TEXT    NOT NULL,
    events     TEXT    NOT NULL,
    secret     TEXT    NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS webhooks_by_tenant ON webhooks (tenant_id, created_at);

CREATE TABLE IF NOT EXISTS webhook_deliveries (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id              TEXT    NOT NULL UNIQUE,
    webhook_id      TEXT    NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    tenant_id       BIGINT NOT NULL,
    event_id        TEXT    NOT NULL,
    event_type      TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    attempts        BIGINT NOT NULL,
    last_status     BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    next_attempt_at BIGINT,
    finished_at     BIGINT
);

CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, seq);
CREATE INDEX IF NOT EXISTS webhook_deliveries_finished ON webhook_deliveries (finished_at)
    WHERE finished_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS audit_log (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    actor       TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    key_id      BIGINT,
    external_id TEXT,
    webhook_id  TEXT,
    changes     TEXT    NOT NULL
);

CREATE INDEX IF NOT EXISTS audit_log_by_tenant ON audit_log (tenant_id, seq);
CREATE INDEX IF NOT EXISTS audit_log_by_time ON audit_log (at);

ALTER TABLE api_keys ADD COLUMN expiry_notice_for BIGINT;
