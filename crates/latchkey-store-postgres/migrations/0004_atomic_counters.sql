-- Brute-force accounting as one counter per key, incremented by the database in one statement
-- (INSERT ... ON CONFLICT DO UPDATE ... RETURNING), instead of one row per failure counted
-- afterwards: concurrent failures can no longer each read the count before the other's insert,
-- and the table is bounded by the number of keys, not of failures.
-- The SQLite migration of the same name holds the same table, column for column.
-- failure_key is a hashed user name or client address. The window starts at the first failure
-- and restarts with the first failure after it; captcha_required outlives the window until a
-- login of that name succeeds (or the name stays silent long enough for the purge).
-- failures holds a u64 count: BIGINT.

CREATE TABLE failure_counter (
    failure_key       TEXT PRIMARY KEY,
    window_started_at BIGINT NOT NULL,
    failures          BIGINT NOT NULL,
    captcha_required  BOOLEAN NOT NULL DEFAULT FALSE
);

-- Carry the old rows over (the migration runs in one transaction): a key's failures become a
-- window opened at its oldest failure still kept, and a CAPTCHA requirement sets the flag,
-- with no failures counted when the key had none left.
INSERT INTO failure_counter (failure_key, window_started_at, failures)
SELECT failure_key, MIN(failed_at), COUNT(*)
FROM login_failure
GROUP BY failure_key;

INSERT INTO failure_counter (failure_key, window_started_at, failures, captcha_required)
SELECT failure_key, since, 0, TRUE
FROM captcha_requirement
ON CONFLICT (failure_key) DO UPDATE SET captcha_required = TRUE;

DROP TABLE login_failure;
DROP TABLE captcha_requirement;
