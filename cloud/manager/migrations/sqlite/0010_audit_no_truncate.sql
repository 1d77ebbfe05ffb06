-- PostgreSQL refuses TRUNCATE on audit_log from this version on. SQLite has no
-- TRUNCATE (a DELETE without WHERE still fires the DELETE trigger of 0001), so
-- there is nothing to add: this statement only keeps the version numbers in step.
DROP TRIGGER IF EXISTS audit_log_no_truncate;
