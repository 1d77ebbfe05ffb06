-- Gateways: registration credential (one-time, SHA-256) and gateway token (SHA-256),
-- and the agents each gateway reports. Keep in step with ../postgres/0005_gateways.sql.

CREATE TABLE gateways (
    id                      TEXT PRIMARY KEY,
    name                    TEXT NOT NULL UNIQUE,
    url                     TEXT,
    registration_hash       TEXT UNIQUE,
    registration_expires_at INTEGER,
    token_hash              TEXT UNIQUE,
    registered_at           INTEGER,
    last_seen_at            INTEGER,
    version                 TEXT,
    created_at              INTEGER NOT NULL
);

CREATE TABLE gateway_agents (
    gateway_id    TEXT NOT NULL REFERENCES gateways(id) ON DELETE CASCADE,
    agent_id      TEXT NOT NULL,
    pairing_code  TEXT NOT NULL,
    endpoints     TEXT NOT NULL,
    first_seen_at INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL,
    PRIMARY KEY (gateway_id, agent_id)
);
CREATE INDEX gateway_agents_agent ON gateway_agents(agent_id);
CREATE INDEX gateway_agents_code ON gateway_agents(pairing_code);
