-- Family B (SCRAM + JWT) and family C: per-session idle timeouts, rotating refresh tokens,
-- SCRAM handshakes between their two messages, and JWT signing keys.
-- The SQLite migration of the same name holds the same tables, column for column.

ALTER TABLE session ADD COLUMN idle_timeout BIGINT NOT NULL DEFAULT 900;

CREATE INDEX session_expiry ON session (absolute_expires_at);

CREATE TABLE refresh_token (
    token_hash BYTEA PRIMARY KEY,
    session_id UUID NOT NULL REFERENCES session (session_id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    used_at    BIGINT
);

CREATE INDEX refresh_token_session ON refresh_token (session_id);

-- iterations holds a Rust u32: BIGINT, as person.scram_iterations.
CREATE TABLE scram_handshake (
    nonce_hash   BYTEA PRIMARY KEY,
    server_id    TEXT NOT NULL,
    email        TEXT NOT NULL,
    client_nonce TEXT NOT NULL,
    salt         BYTEA NOT NULL,
    iterations   BIGINT NOT NULL,
    platform     TEXT,
    expires_at   BIGINT NOT NULL
);

CREATE TABLE signing_key (
    kid        TEXT PRIMARY KEY,
    secret_key BYTEA NOT NULL,
    public_key BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT
);
