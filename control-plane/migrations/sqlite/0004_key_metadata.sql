-- Key metadata (SPEC §10): a JSON object of at most 1 KiB, serialized, set
-- by the API and returned by it; never in the key table feed.
ALTER TABLE api_keys ADD COLUMN metadata TEXT;
