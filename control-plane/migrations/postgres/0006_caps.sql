-- Spending caps and request quotas (SPEC §11): `caps` is the key's caps
-- and what they used in their current period, one JSON object
-- (crate::store::caps::Caps; NULL: none); `exhausted` the key table status
-- code they give (2 quota, 3 spend; NULL: not exhausted), which the feed
-- sends and the refill looks up.
ALTER TABLE api_keys ADD COLUMN caps TEXT;
ALTER TABLE api_keys ADD COLUMN exhausted INTEGER;

CREATE INDEX IF NOT EXISTS api_keys_exhausted ON api_keys (id) WHERE exhausted IS NOT NULL;
