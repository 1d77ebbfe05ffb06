-- Row triggers (0001) refuse UPDATE and DELETE on audit_log, but TRUNCATE fires no
-- row trigger: refuse it with a statement-level one. Keep in step with
-- ../sqlite/0010_audit_no_truncate.sql (SQLite has no TRUNCATE; its DELETE triggers
-- already cover "DELETE FROM audit_log").
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
