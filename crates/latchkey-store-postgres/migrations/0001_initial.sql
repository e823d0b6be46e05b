-- latchkey schema, PostgreSQL flavour. The SQLite migration of the same name holds the same
-- tables, column for column. Never edit a released migration: add a new file.
-- Times are unix seconds (BIGINT). Ids that latchkey generates are UUID; server and role ids are
-- text chosen by people. Secrets are stored only as SHA-256 digests (token_hash, key_hash,
-- captcha_answer) or argon2id PHC strings (password_argon2, pin_hash).
-- Users live in "person" because "user" is reserved in PostgreSQL.
-- Counters that hold a Rust u32 (scram_iterations, *_failures) are BIGINT so no value overflows.

CREATE TABLE setting (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE server (
    server_id  TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    secret_key BYTEA NOT NULL,
    public_key BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE role (
    role_id TEXT PRIMARY KEY,
    root    BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE permission (
    role_id   TEXT NOT NULL REFERENCES role (role_id) ON DELETE CASCADE,
    server_id TEXT NOT NULL REFERENCES server (server_id) ON DELETE CASCADE,
    sessions  BOOLEAN NOT NULL,
    accounts  BOOLEAN NOT NULL,
    users     BOOLEAN NOT NULL,
    servers   BOOLEAN NOT NULL,
    PRIMARY KEY (role_id, server_id)
);

CREATE TABLE api_key (
    api_key_id UUID PRIMARY KEY,
    key_hash   BYTEA NOT NULL UNIQUE,
    role_id    TEXT NOT NULL REFERENCES role (role_id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL
);

CREATE TABLE person (
    user_id          UUID PRIMARY KEY,
    server_id        TEXT NOT NULL REFERENCES server (server_id) ON DELETE CASCADE,
    userid           TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    password_argon2  TEXT,
    scram_salt       BYTEA,
    scram_iterations BIGINT,
    scram_stored_key BYTEA,
    scram_server_key BYTEA,
    totp_secret      BYTEA,
    totp_last_step   BIGINT NOT NULL DEFAULT -1,
    pin_hash         TEXT,
    UNIQUE (server_id, userid)
);

CREATE TABLE session (
    session_id          UUID PRIMARY KEY,
    server_id           TEXT NOT NULL REFERENCES server (server_id) ON DELETE CASCADE,
    user_id             UUID REFERENCES person (user_id) ON DELETE CASCADE,
    token_hash          BYTEA NOT NULL UNIQUE,
    methods             TEXT NOT NULL,
    state               TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    last_active_at      BIGINT NOT NULL,
    idle_expires_at     BIGINT NOT NULL,
    absolute_expires_at BIGINT NOT NULL,
    client_ip           TEXT,
    user_agent          TEXT,
    device_name         TEXT,
    pending_mfa         TEXT,
    mfa_failures        BIGINT NOT NULL DEFAULT 0,
    captcha_answer      BYTEA,
    captcha_failures    BIGINT NOT NULL DEFAULT 0,
    password_ok         BOOLEAN NOT NULL DEFAULT FALSE,
    revoked_at          BIGINT
);

CREATE INDEX session_user_activity ON session (user_id, state, last_active_at DESC);

CREATE TABLE login_failure (
    failure_key TEXT NOT NULL,
    failed_at   BIGINT NOT NULL
);

CREATE INDEX login_failure_key ON login_failure (failure_key, failed_at);

CREATE TABLE captcha_requirement (
    failure_key TEXT PRIMARY KEY,
    since       BIGINT NOT NULL
);

CREATE TABLE audit_event (
    audit_event_id BIGSERIAL PRIMARY KEY,
    at             BIGINT NOT NULL,
    server_id      TEXT NOT NULL,
    kind           TEXT NOT NULL,
    userid         TEXT,
    session_id     UUID,
    ip             TEXT,
    detail         TEXT
);

CREATE INDEX audit_event_server ON audit_event (server_id, audit_event_id DESC);
