-- SCRAM first messages store nothing: the server nonce carries the handshake (expiry, salt,
-- iteration count), authenticated by a key derived from the server's identity key, so a flood
-- of first messages costs no rows. Only a used handshake is recorded, by the final message's
-- one INSERT ... ON CONFLICT DO NOTHING: of concurrent finals with one nonce, in any number of
-- processes, the later inserts wait for the first and then insert nothing, so exactly one
-- sees its row inserted. The purge forgets a row once its handshake has expired.
-- The SQLite migration of the same name holds the same table, column for column.
-- Handshakes in flight while this migration runs are lost: their final message gets 400 and
-- the client starts again.

DROP TABLE scram_handshake;

-- nonce_hash is the SHA-256 of the combined (client + server) nonce.
CREATE TABLE used_handshake (
    nonce_hash BYTEA PRIMARY KEY,
    expires_at BIGINT NOT NULL
);

CREATE INDEX used_handshake_expiry ON used_handshake (expires_at);
