-- Tokens hpcdesk issued for an account before this time (ms since the epoch; 0: none) are
-- refused and cannot be renewed: a password change, a disable or a revoked access key ends
-- every session that came before it.
ALTER TABLE users ADD COLUMN tokens_valid_after INTEGER NOT NULL DEFAULT 0;
