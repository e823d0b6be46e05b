-- Brute-force accounting as one counter row per key, incremented in one statement that answers
-- the new count, instead of one row per failure counted afterwards (which let concurrent
-- failures race past the limit and grew with every failure). The PostgreSQL migration of the
-- same name holds the same table.
-- A key's window starts at its first failure and restarts with the first failure after the
-- window; captcha_required (0 or 1) outlives the window until the key is cleared.

CREATE TABLE failure_counter (
    failure_key       TEXT PRIMARY KEY,
    window_started_at INTEGER NOT NULL,
    failures          INTEGER NOT NULL,
    captcha_required  INTEGER NOT NULL DEFAULT 0
);

-- Carry the old rows over: a key's window starts at its oldest recorded failure.
INSERT INTO failure_counter (failure_key, window_started_at, failures)
SELECT failure_key, MIN(failed_at), COUNT(*) FROM login_failure GROUP BY failure_key;

-- A CAPTCHA requirement becomes the flag (a key without failures keeps its time, count 0).
-- "WHERE true" keeps SQLite from reading ON CONFLICT as a join constraint.
INSERT INTO failure_counter (failure_key, window_started_at, failures, captcha_required)
SELECT failure_key, since, 0, 1 FROM captcha_requirement WHERE true
ON CONFLICT (failure_key) DO UPDATE SET captcha_required = 1;

-- The index login_failure_key goes with its table.
DROP TABLE login_failure;
DROP TABLE captcha_requirement;
