-- Usage (SPEC §11): per key, minute and outcome a count, and the cost the
-- upstream reported (kept on the `allowed` row); minute rows live 48 h and
-- are then folded into hourly rows, kept 400 days. Batch ids make ingest
-- idempotent (kept 48 h). `last_used_at`: the latest minute with allowed
-- requests.
CREATE TABLE IF NOT EXISTS usage_minute (
    key_id      BIGINT NOT NULL,
    tenant_id   BIGINT NOT NULL,
    minute      BIGINT NOT NULL,
    outcome     TEXT    NOT NULL,
    count       BIGINT NOT NULL,
    cost_micros BIGINT NOT NULL,
    PRIMARY KEY (key_id, minute, outcome)
);

CREATE INDEX IF NOT EXISTS usage_minute_by_tenant ON usage_minute (tenant_id, minute);
CREATE INDEX IF NOT EXISTS usage_minute_by_time ON usage_minute (minute);

CREATE TABLE IF NOT EXISTS usage_hour (
    key_id      BIGINT NOT NULL,
    tenant_id   BIGINT NOT NULL,
    hour        BIGINT NOT NULL,
    outcome     TEXT    NOT NULL,
    count       BIGINT NOT NULL,
    cost_micros BIGINT NOT NULL,
    PRIMARY KEY (key_id, hour, outcome)
);

CREATE INDEX IF NOT EXISTS usage_hour_by_tenant ON usage_hour (tenant_id, hour);
CREATE INDEX IF NOT EXISTS usage_hour_by_time ON usage_hour (hour);

CREATE TABLE IF NOT EXISTS usage_batches (
    batch_id    TEXT    PRIMARY KEY,
    received_at BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS usage_batches_by_time ON usage_batches (received_at);

ALTER TABLE api_keys ADD COLUMN last_used_at BIGINT;
