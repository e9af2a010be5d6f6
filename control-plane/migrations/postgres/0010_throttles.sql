-- Throttles shared by every replica (SPEC §15): failed sign-ins per
-- account and per address, sign-ups per address. `until_ms` ends the lock
-- or the counting window (unix ms).
CREATE TABLE IF NOT EXISTS throttles (
    scope    TEXT   NOT NULL,
    key      TEXT   NOT NULL,
    count    BIGINT NOT NULL,
    until_ms BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE INDEX IF NOT EXISTS throttles_by_time ON throttles (until_ms);
