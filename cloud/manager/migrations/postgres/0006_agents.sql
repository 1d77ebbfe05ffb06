-- Agents (adoption state) and join tokens. An agent first reported by a gateway is
-- pending; an admin adopts it into a tenant (or rejects it), or a gateway presents a
-- join token on its behalf. Keep in step with ../sqlite/0006_agents.sql.

CREATE TABLE agents (
    id            TEXT PRIMARY KEY,
    pairing_code  TEXT NOT NULL,
    gateway_id    TEXT,
    status        TEXT NOT NULL CHECK (status IN ('pending', 'adopted', 'rejected')),
    tenant_id     TEXT REFERENCES tenants(id),
    first_seen_at BIGINT NOT NULL,
    decided_at    BIGINT,
    decided_by    TEXT
);
CREATE INDEX agents_code ON agents(pairing_code);
CREATE INDEX agents_tenant ON agents(tenant_id, id);

CREATE TABLE join_tokens (
    id         TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    one_time   BIGINT NOT NULL,
    uses       BIGINT NOT NULL DEFAULT 0,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL
);
