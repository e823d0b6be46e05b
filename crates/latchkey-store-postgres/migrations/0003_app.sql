-- Family A and the companion app: accounts (app key pairs), browser sessions named by
-- (server, nonce), one-time app challenges and pushed login requests.
-- The SQLite migration of the same name holds the same tables, column for column.

CREATE TABLE account (
    account_id     BIGSERIAL PRIMARY KEY,
    server_id      TEXT NOT NULL REFERENCES server (server_id) ON DELETE CASCADE,
    public_key     BYTEA NOT NULL,
    description    TEXT NOT NULL,
    user_id        UUID REFERENCES person (user_id) ON DELETE SET NULL,
    blocked        BOOLEAN NOT NULL DEFAULT FALSE,
    client_version TEXT,
    created_at     BIGINT NOT NULL,
    last_login     BIGINT,
    last_provoke   BIGINT,
    UNIQUE (server_id, public_key)
);

CREATE INDEX account_user ON account (user_id);

CREATE TABLE browser_session (
    server_id        TEXT NOT NULL REFERENCES server (server_id) ON DELETE CASCADE,
    nonce_hash       BYTEA NOT NULL,
    hsid_hash        BYTEA NOT NULL UNIQUE,
    session_id       UUID REFERENCES session (session_id) ON DELETE SET NULL,
    account_id       BIGINT REFERENCES account (account_id) ON DELETE SET NULL,
    login_seed       BYTEA,
    login_challenge  BYTEA UNIQUE,
    login_expires_at BIGINT,
    login_base_url   TEXT,
    user_context     TEXT,
    created_at       BIGINT NOT NULL,
    PRIMARY KEY (server_id, nonce_hash)
);

-- PostgreSQL does not index referencing columns: without these, every session the purge
-- deletes (and every account deleted) would scan the whole table to set its references NULL.
CREATE INDEX browser_session_session ON browser_session (session_id);
CREATE INDEX browser_session_account ON browser_session (account_id);

-- account_id names an account without a foreign key, as in SQLite.
CREATE TABLE app_challenge (
    challenge_hash BYTEA PRIMARY KEY,
    server_id      TEXT NOT NULL REFERENCES server (server_id) ON DELETE CASCADE,
    purpose        TEXT NOT NULL,
    account_id     BIGINT,
    name           TEXT,
    userid         TEXT,
    expires_at     BIGINT NOT NULL
);

CREATE TABLE push_request (
    request_id   UUID PRIMARY KEY,
    server_id    TEXT NOT NULL REFERENCES server (server_id) ON DELETE CASCADE,
    account_id   BIGINT NOT NULL REFERENCES account (account_id) ON DELETE CASCADE,
    nonce_hash   BYTEA NOT NULL,
    user_context TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    answered_at  BIGINT,
    approved     BOOLEAN
);

CREATE INDEX push_request_account ON push_request (account_id, expires_at);
