-- Per-key rate limits (NULL: none), the key's owner (forwarded as
-- x-key-owner), and the operator's suspension of a tenant (its keys travel
-- in the key table with the status org_suspended).

ALTER TABLE api_keys
    ADD COLUMN rate_per_minute BIGINT CHECK (rate_per_minute > 0),
    ADD COLUMN rate_per_day    BIGINT CHECK (rate_per_day > 0),
    ADD COLUMN external_id     TEXT   CHECK (length(external_id) BETWEEN 1 AND 128);
ALTER TABLE tenants ADD COLUMN suspended BOOLEAN NOT NULL DEFAULT FALSE;

CREATE INDEX api_keys_by_owner ON api_keys (tenant_id, external_id)
    WHERE external_id IS NOT NULL;
