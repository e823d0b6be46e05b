-- Audit events are purged after `audit_retention_days`: the purge deletes by time.

CREATE INDEX audit_event_at ON audit_event (at);
