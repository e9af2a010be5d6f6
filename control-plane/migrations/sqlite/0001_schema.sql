-- keygate control plane schema (SQLite). Ids are the 64-bit ids of the core
-- crate stored as signed integers; only key hashes are stored, never keys.

CREATE TABLE IF NOT EXISTS tenants (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    email      TEXT    NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS api_keys (
    seq            INTEGER PRIMARY KEY,
    id             INTEGER NOT NULL UNIQUE,
    tenant_id      INTEGER NOT NULL REFERENCES tenants (id),
    name           TEXT    NOT NULL,
    key_hash       BLOB    NOT NULL UNIQUE,
    display_prefix TEXT    NOT NULL,
    scopes         TEXT    NOT NULL,
    environment    TEXT    NOT NULL,
    tier           TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER,
    revoked_at     INTEGER,
    -- 1 while the key table holds the key (not revoked, not past retention)
    in_table       INTEGER NOT NULL
) STRICT;

CREATE INDEX IF NOT EXISTS api_keys_by_tenant ON api_keys (tenant_id, seq);

CREATE INDEX IF NOT EXISTS api_keys_to_retire ON api_keys (expires_at)
    WHERE in_table = 1 AND expires_at IS NOT NULL;

-- One row per change of a key's feed state; a delta sends the current state
-- of every key named after its base version.
CREATE TABLE IF NOT EXISTS key_revisions (
    version INTEGER PRIMARY KEY,
    key_id  INTEGER NOT NULL
) STRICT;

-- The feed version (only grows, also across restarts) and the newest version
-- whose revisions compaction dropped (older bases get a snapshot).
CREATE TABLE IF NOT EXISTS feed_state (
    id                INTEGER PRIMARY KEY CHECK (id = 1),
    version           INTEGER NOT NULL,
    compacted_through INTEGER NOT NULL
) STRICT;

INSERT OR IGNORE INTO feed_state (id, version, compacted_through) VALUES (1, 1, 1);

-- The key set's id: 16 random bytes, made when the database is created (a
-- database made before this table gets one on its next open). Feed versions
-- belong to it: a filter holding another id takes a fresh snapshot.
CREATE TABLE IF NOT EXISTS key_set (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    key_set BLOB    NOT NULL CHECK (length(key_set) = 16)
) STRICT;
