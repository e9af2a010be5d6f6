-- Per-key rate limits (NULL: none), the key's owner (forwarded as
-- x-key-owner), and the operator's suspension of a tenant (its keys travel
-- in the key table with the status org_suspended).

ALTER TABLE api_keys ADD COLUMN rate_per_minute INTEGER;
ALTER TABLE api_keys ADD COLUMN rate_per_day INTEGER;
ALTER TABLE api_keys ADD COLUMN external_id TEXT;
ALTER TABLE tenants ADD COLUMN suspended INTEGER NOT NULL DEFAULT 0;

CREATE INDEX IF NOT EXISTS api_keys_by_owner ON api_keys (tenant_id, external_id)
    WHERE external_id IS NOT NULL;
