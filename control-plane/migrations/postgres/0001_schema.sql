-- keygate control plane schema (PostgreSQL), the same tables as SQLite's.
-- Ids are the 64-bit ids of the core crate stored as BIGINT (same bits);
-- only key hashes are stored, never keys. Applied once, in order, by the
-- control plane at start (keygate_migrations records what was applied).

CREATE TABLE tenants (
    id         BIGINT PRIMARY KEY,
    name       TEXT   NOT NULL,
    email      TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    seq            BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id             BIGINT  NOT NULL UNIQUE,
    tenant_id      BIGINT  NOT NULL REFERENCES tenants (id),
    name           TEXT    NOT NULL,
    -- bytea compares byte by byte: the hash order of snapshot pages
    key_hash       BYTEA   NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    display_prefix TEXT    NOT NULL,
    scopes         TEXT    NOT NULL,
    environment    TEXT    NOT NULL,
    tier           TEXT    NOT NULL,
    created_at     BIGINT  NOT NULL,
    expires_at     BIGINT,
    revoked_at     BIGINT,
    -- true while the key table holds the key (not revoked, not past retention)
    in_table       BOOLEAN NOT NULL
);

CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, seq);

CREATE INDEX api_keys_to_retire ON api_keys (expires_at)
    WHERE in_table AND expires_at IS NOT NULL;

-- One row per change of a key's feed state; a delta sends the current state
-- of every key named after its base version.
CREATE TABLE key_revisions (
    version BIGINT PRIMARY KEY,
    key_id  BIGINT NOT NULL
);

-- The feed version and the newest version whose revisions compaction
-- dropped. The version is this one row, moved in the writing transaction:
-- its row lock orders writers, so versions follow commit order and a
-- reader that sees version v sees every revision up to v. (A SEQUENCE
-- would not: nextval is neither transactional nor in commit order.)
CREATE TABLE feed_state (
    id                INTEGER PRIMARY KEY CHECK (id = 1),
    version           BIGINT  NOT NULL,
    compacted_through BIGINT  NOT NULL
);

INSERT INTO feed_state (id, version, compacted_through) VALUES (1, 1, 1);

-- The key set's id: 16 random bytes, inserted with this schema. Feed
-- versions belong to it: a filter holding another id takes a snapshot.
CREATE TABLE key_set (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    key_set BYTEA   NOT NULL CHECK (length(key_set) = 16)
);
