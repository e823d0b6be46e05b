-- SCRAM first messages store nothing: the server nonce carries the handshake (expiry, salt,
-- iteration count), authenticated by a key derived from the server's identity key, so a flood
-- of first messages costs no rows. Only a used handshake is recorded, by the final message's
-- one INSERT ... ON CONFLICT DO NOTHING (first use only, across processes), until the purge
-- forgets it once the handshake has expired. The PostgreSQL migration of the same name holds
-- the same table.
-- Handshakes in flight while this migration runs are lost: their final message gets 400 and
-- the client starts again.

DROP TABLE scram_handshake;

-- nonce_hash is the SHA-256 of the combined (client + server) nonce.
CREATE TABLE used_handshake (
    nonce_hash BLOB PRIMARY KEY,
    expires_at INTEGER NOT NULL
);

CREATE INDEX used_handshake_expiry ON used_handshake (expires_at);
