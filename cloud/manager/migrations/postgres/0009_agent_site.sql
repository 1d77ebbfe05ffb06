-- Agents are adopted into a tenant and, optionally, a site of it (a short label:
-- rack, room, data centre); a join token can carry the site its agents go to.
ALTER TABLE agents ADD COLUMN site TEXT;
ALTER TABLE join_tokens ADD COLUMN site TEXT;
CREATE INDEX agents_tenant_site ON agents(tenant_id, site);
