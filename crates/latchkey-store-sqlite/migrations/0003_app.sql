-- Family A and the companion app: accounts (app key pairs), browser sessions named by
-- (server, nonce), one-time app challenges and pushed login requests.

CREATE TABLE account (
    account_id     INTEGER PRIMARY KEY AUTOINCREMENT,
    server_id      TEXT NOT NULL REFERENCES server (server_id) ON DELETE CASCADE,
    public_key     BLOB NOT NULL,
    description    TEXT NOT NULL,
    user_id        TEXT REFERENCES person (user_id) ON DELETE SET NULL,
    blocked        INTEGER NOT NULL DEFAULT 0,
    client_version TEXT,
    created_at     INTEGER NOT NULL,
    last_login     INTEGER,
    last_provoke   INTEGER,
    UNIQUE (server_id, public_key)
);

CREATE INDEX account_user ON account (user_id);

CREATE TABLE browser_session (
    server_id        TEXT NOT NULL REFERENCES server (server_id) ON DELETE CASCADE,
    nonce_hash       BLOB NOT NULL,
    hsid_hash        BLOB NOT NULL UNIQUE,
    session_id       TEXT REFERENCES session (session_id) ON DELETE SET NULL,
    account_id       INTEGER REFERENCES account (account_id) ON DELETE SET NULL,
    login_seed       BLOB,
    login_challenge  BLOB UNIQUE,
    login_expires_at INTEGER,
    login_base_url   TEXT,
    user_context     TEXT,
    created_at       INTEGER NOT NULL,
    PRIMARY KEY (server_id, nonce_hash)
);

CREATE TABLE app_challenge (
    challenge_hash BLOB PRIMARY KEY,
    server_id      TEXT NOT NULL REFERENCES server (server_id) ON DELETE CASCADE,
    purpose        TEXT NOT NULL,
    account_id     INTEGER,
    name           TEXT,
    userid         TEXT,
    expires_at     INTEGER NOT NULL
);

CREATE TABLE push_request (
    request_id   TEXT PRIMARY KEY,
    server_id    TEXT NOT NULL REFERENCES server (server_id) ON DELETE CASCADE,
    account_id   INTEGER NOT NULL REFERENCES account (account_id) ON DELETE CASCADE,
    nonce_hash   BLOB NOT NULL,
    user_context TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    answered_at  INTEGER,
    approved     INTEGER
);

CREATE INDEX push_request_account ON push_request (account_id, expires_at);
