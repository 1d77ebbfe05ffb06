-- Deleted users are kept as tombstones (email rewritten, no tenant, disabled) until
-- housekeeping purges them with their ended sessions, so the revoked sessions stay in
-- the gateways' revocation feed for the retention period. Audit entries are filtered
-- by target (e.g. a server id).
ALTER TABLE users ADD COLUMN deleted_at INTEGER;
CREATE INDEX audit_log_target ON audit_log(target);
