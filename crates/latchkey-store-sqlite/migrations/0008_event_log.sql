-- Revocations made by other processes on the same file (administrative commands), polled by
-- the server each second so they leave its cache (see src/events.rs). PostgreSQL uses
-- LISTEN/NOTIFY instead; its migration of the same name is empty.

CREATE TABLE event_log (
    event_id INTEGER PRIMARY KEY AUTOINCREMENT,
    origin   TEXT NOT NULL,
    at       INTEGER NOT NULL,
    sessions TEXT NOT NULL
);
