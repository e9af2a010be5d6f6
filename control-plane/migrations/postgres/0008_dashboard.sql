-- Dashboard sign-in (SPEC §12), the same tables as SQLite's: a tenant's
-- password (argon2id PHC string) under its lower-cased email, and sessions
-- stored by the SHA-256 of their id only.
CREATE TABLE dashboard_accounts (
    tenant_id     BIGINT PRIMARY KEY REFERENCES tenants (id),
    email         TEXT   NOT NULL UNIQUE,
    password_hash TEXT   NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE dashboard_sessions (
    id_hash    BYTEA  PRIMARY KEY CHECK (length(id_hash) = 32),
    tenant_id  BIGINT NOT NULL REFERENCES tenants (id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE INDEX dashboard_sessions_by_expiry ON dashboard_sessions (expires_at);
CREATE INDEX dashboard_sessions_by_tenant ON dashboard_sessions (tenant_id);
