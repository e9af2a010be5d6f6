-- Dashboard sign-in (SPEC §12). A tenant's password, as an argon2id PHC
-- string, under its email (lower-cased; one account per email); and the
-- sign-in sessions, of which only the SHA-256 of the session id is stored.
CREATE TABLE IF NOT EXISTS dashboard_accounts (
    tenant_id     INTEGER PRIMARY KEY REFERENCES tenants (id),
    email         TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    updated_at    INTEGER NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS dashboard_sessions (
    id_hash    BLOB    PRIMARY KEY CHECK (length(id_hash) = 32),
    tenant_id  INTEGER NOT NULL REFERENCES tenants (id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;

CREATE INDEX IF NOT EXISTS dashboard_sessions_by_expiry ON dashboard_sessions (expires_at);
CREATE INDEX IF NOT EXISTS dashboard_sessions_by_tenant ON dashboard_sessions (tenant_id);
