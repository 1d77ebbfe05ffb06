-- Inventory: servers with their BMC endpoints and encrypted credentials
-- (cred_blob = nonce || AES-256-GCM ciphertext || tag under key cred_key_id).
-- Keep in step with ../sqlite/0004_servers.sql.

CREATE TABLE servers (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    name          TEXT NOT NULL,
    gateway_id    TEXT,
    agent_id      TEXT,
    power_url     TEXT,
    serial_url    TEXT,
    graphical_url TEXT,
    cert_sha256   TEXT,
    cred_key_id   TEXT,
    cred_blob     BYTEA,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    UNIQUE (tenant_id, name),
    CHECK ((cred_key_id IS NULL) = (cred_blob IS NULL))
);
CREATE INDEX servers_tenant ON servers(tenant_id, id);
CREATE INDEX servers_agent ON servers(agent_id);
