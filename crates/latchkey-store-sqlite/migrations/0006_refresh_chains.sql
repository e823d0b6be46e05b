-- Refresh tokens rotate when the client takes part: a session's current token and its one
-- unused successor are columns of the session row (each transition is one compare-and-set
-- there); refresh_token now keeps only superseded tokens (presenting one is theft). The
-- PostgreSQL migration of the same name does the same.

ALTER TABLE session ADD COLUMN refresh_hash BLOB;
ALTER TABLE session ADD COLUMN refresh_next_hash BLOB;

-- The unused token of each session (the single-use scheme had at most one) becomes current.
UPDATE session SET refresh_hash = (
    SELECT r.token_hash FROM refresh_token r
    WHERE r.session_id = session.session_id AND r.used_at IS NULL
    ORDER BY r.created_at DESC LIMIT 1
);
DELETE FROM refresh_token WHERE used_at IS NULL;

CREATE UNIQUE INDEX session_refresh_hash ON session (refresh_hash);
CREATE UNIQUE INDEX session_refresh_next_hash ON session (refresh_next_hash);
