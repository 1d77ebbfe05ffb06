-- Tenants (customers) and each user's tenant and role. Global admins (is_global_admin)
-- may have no tenant. Keep in step with ../sqlite/0003_tenants.sql.

CREATE TABLE tenants (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

ALTER TABLE users ADD COLUMN tenant_id TEXT REFERENCES tenants(id);
ALTER TABLE users ADD COLUMN role TEXT CHECK (role IN ('viewer', 'operator', 'admin'));
ALTER TABLE users ADD CONSTRAINT users_role_with_tenant
    CHECK ((tenant_id IS NULL) = (role IS NULL));
CREATE INDEX users_tenant ON users(tenant_id, email);
