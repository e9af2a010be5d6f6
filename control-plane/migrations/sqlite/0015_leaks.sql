-- Leaked keys (SPEC §17): each tenant's `leak_policy`, what a secret
-- scanning report of one of its live keys does ('revoke', or 'notify'; a
-- tenant without a row has the default, 'revoke'); and per key the last
-- hour (unix seconds of its start) a `key.usage.spike` event went out for,
-- so that one goes out at most once an hour.
CREATE TABLE IF NOT EXISTS tenant_settings (
    tenant_id   INTEGER PRIMARY KEY,
    leak_policy TEXT NOT NULL CHECK (leak_policy IN ('revoke', 'notify'))
) STRICT;

CREATE TABLE IF NOT EXISTS key_spikes (
    key_id INTEGER PRIMARY KEY,
    hour   INTEGER NOT NULL
) STRICT;
