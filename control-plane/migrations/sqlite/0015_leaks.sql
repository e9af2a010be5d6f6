-- Leaked keys (SPEC §17): each tenant's `leak_policy`, what a secret
-- scanning report of one of its live keys does ('revoke', the default, or
-- 'notify'); and per key the last hour (unix seconds of its start) a
-- `key.usage.spike` event went out for, so that one goes out at most once an
-- hour.
ALTER TABLE tenants ADD COLUMN leak_policy TEXT NOT NULL DEFAULT 'revoke'
    CHECK (leak_policy IN ('revoke', 'notify'));

CREATE TABLE IF NOT EXISTS key_spikes (
    key_id INTEGER PRIMARY KEY,
    hour   INTEGER NOT NULL
) STRICT;
