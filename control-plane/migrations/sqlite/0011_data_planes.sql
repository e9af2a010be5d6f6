-- Data planes (SPEC §15): each Envoy fleet reads the key table and reports
-- usage with a feed token of its own. Only the SHA-256 of a token is kept;
-- after a rotation the previous one stays valid until `old_token_expires_at`.
-- `tenants` is a JSON array of tenant ids the plane is limited to, or NULL
-- for every tenant. A revoked plane keeps its row (`revoked_at`) for listing.
CREATE TABLE IF NOT EXISTS data_planes (
    id                   INTEGER PRIMARY KEY,
    name                 TEXT    NOT NULL,
    tenants              TEXT,
    token_hash           BLOB    NOT NULL CHECK (length(token_hash) = 32),
    old_token_hash       BLOB    CHECK (old_token_hash IS NULL OR length(old_token_hash) = 32),
    old_token_expires_at INTEGER,
    created_at           INTEGER NOT NULL,
    rotated_at           INTEGER,
    revoked_at           INTEGER
) STRICT;
