-- Passkeys (WebAuthn credentials): one row per credential, whose id the authenticator chose
-- and which no two users share. `passkey` is webauthn-rs's serialisation of the credential
-- (public key, signature counter, backup flags), rewritten after each use.

CREATE TABLE passkey (
    credential_id BYTEA PRIMARY KEY,
    user_id       UUID NOT NULL REFERENCES person (user_id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    passkey       TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT
);

CREATE INDEX passkey_user ON passkey (user_id);
