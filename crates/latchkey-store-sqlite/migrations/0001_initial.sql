-- latchkey schema, SQLite flavour. The PostgreSQL migration of the same name holds the same
-- tables. Never edit a released migration: add a new file.
-- Times are unix seconds. Secrets are stored only as SHA-256 digests (token_hash, key_hash,
-- captcha_answer) or argon2id PHC strings (password_argon2, pin_hash).
-- Users live in "person" because "user" is reserved in PostgreSQL.

CREATE TABLE setting (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE server (
    server_id  TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    secret_key BLOB NOT NULL,
    public_key BLOB NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE role (
    role_id TEXT PRIMARY KEY,
    root    INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE permission (
    role_id   TEXT NOT NULL REFERENCES role (role_id) ON DELETE CASCADE,
    server_id TEXT NOT NULL REFERENCES server (server_id) ON DELETE CASCADE,
    sessions  INTEGER NOT NULL,
    accounts  INTEGER NOT NULL,
    users     INTEGER NOT NULL,
    servers   INTEGER NOT NULL,
    PRIMARY KEY (role_id, server_id)
);

CREATE TABLE api_key (
    api_key_id TEXT PRIMARY KEY,
    key_hash   BLOB NOT NULL UNIQUE,
    role_id    TEXT NOT NULL REFERENCES role (role_id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL
);

CREATE TABLE person (
    user_id          TEXT PRIMARY KEY,
    server_id        TEXT NOT NULL REFERENCES server (server_id) ON DELETE CASCADE,
    userid           TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    password_argon2  TEXT,
    scram_salt       BLOB,
    scram_iterations INTEGER,
    scram_stored_key BLOB,
    scram_server_key BLOB,
    totp_secret      BLOB,
    totp_last_step   INTEGER NOT NULL DEFAULT -1,
    pin_hash         TEXT,
    UNIQUE (server_id, userid)
);

CREATE TABLE session (
    session_id          TEXT PRIMARY KEY,
    server_id           TEXT NOT NULL REFERENCES server (server_id) ON DELETE CASCADE,
    user_id             TEXT REFERENCES person (user_id) ON DELETE CASCADE,
    token_hash          BLOB NOT NULL UNIQUE,
    methods             TEXT NOT NULL,
    state               TEXT NOT NULL,
    created_at          INTEGER NOT NULL,
    last_active_at      INTEGER NOT NULL,
    idle_expires_at     INTEGER NOT NULL,
    absolute_expires_at INTEGER NOT NULL,
    client_ip           TEXT,
    user_agent          TEXT,
    device_name         TEXT,
    pending_mfa         TEXT,
    mfa_failures        INTEGER NOT NULL DEFAULT 0,
    captcha_answer      BLOB,
    captcha_failures    INTEGER NOT NULL DEFAULT 0,
    password_ok         INTEGER NOT NULL DEFAULT 0,
    revoked_at          INTEGER
);

CREATE INDEX session_user_activity ON session (user_id, state, last_active_at DESC);

CREATE TABLE login_failure (
    failure_key TEXT NOT NULL,
    failed_at   INTEGER NOT NULL
);

CREATE INDEX login_failure_key ON login_failure (failure_key, failed_at);

CREATE TABLE captcha_requirement (
    failure_key TEXT PRIMARY KEY,
    since       INTEGER NOT NULL
);

CREATE TABLE audit_event (
    audit_event_id INTEGER PRIMARY KEY AUTOINCREMENT,
    at             INTEGER NOT NULL,
    server_id      TEXT NOT NULL,
    kind           TEXT NOT NULL,
    userid         TEXT,
    session_id     TEXT,
    ip             TEXT,
    detail         TEXT
);

CREATE INDEX audit_event_server ON audit_event (server_id, audit_event_id DESC);
