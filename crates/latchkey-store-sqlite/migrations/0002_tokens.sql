-- Family B (SCRAM + JWT) and family C: per-session idle timeouts, rotating refresh tokens,
-- SCRAM handshakes between their two messages, and JWT signing keys.

ALTER TABLE session ADD COLUMN idle_timeout INTEGER NOT NULL DEFAULT 900;

CREATE INDEX session_expiry ON session (absolute_expires_at);

CREATE TABLE refresh_token (
    token_hash BLOB PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES session (session_id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    used_at    INTEGER
);

CREATE INDEX refresh_token_session ON refresh_token (session_id);

CREATE TABLE scram_handshake (
    nonce_hash   BLOB PRIMARY KEY,
    server_id    TEXT NOT NULL,
    email        TEXT NOT NULL,
    client_nonce TEXT NOT NULL,
    salt         BLOB NOT NULL,
    iterations   INTEGER NOT NULL,
    platform     TEXT,
    expires_at   INTEGER NOT NULL
);

CREATE TABLE signing_key (
    kid        TEXT PRIMARY KEY,
    secret_key BLOB NOT NULL,
    public_key BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    retired_at INTEGER
);
