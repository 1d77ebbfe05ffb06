-- Signing keys are sealed with the credential key file (AES-256-GCM, bound to the
-- kid). `sealed_with` names the key that sealed `private_key`; NULL marks a row
-- written before sealing existed, which the manager seals on first load.
ALTER TABLE signing_keys ADD COLUMN sealed_with TEXT;
