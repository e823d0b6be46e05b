-- Family A transactions: what a relying party asks the person to confirm in the app of the
-- account logged in on a browser session, with the server's signature over the values.
-- status: 0 new, 1 approved, 2 declined (with the app's signature over the values and the
-- verdict); session_id the session it lives within. Purged with the dead sessions once
-- expired.
CREATE TABLE app_transaction (
    transaction_id UUID PRIMARY KEY,
    server_id      TEXT NOT NULL REFERENCES server (server_id) ON DELETE CASCADE,
    session_id     UUID NOT NULL,
    account_id     BIGINT NOT NULL REFERENCES account (account_id) ON DELETE CASCADE,
    amount         TEXT NOT NULL,
    beneficiary    TEXT NOT NULL,
    description    TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    status         SMALLINT NOT NULL DEFAULT 0,
    answered_at    BIGINT,
    signature      TEXT NOT NULL,
    answer_signature TEXT
);

CREATE INDEX app_transaction_account ON app_transaction (account_id, expires_at);
CREATE INDEX app_transaction_expiry ON app_transaction (expires_at);
