-- SQLite keeps an event_log for revocations made by other processes; PostgreSQL delivers them
-- with LISTEN/NOTIFY (src/events.rs). Nothing to do: this file keeps the two migration lists
-- alike.
SELECT 1;
