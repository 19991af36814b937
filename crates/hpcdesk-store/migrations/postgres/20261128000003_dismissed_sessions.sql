-- A session that ended outside hpcdesk (its Slurm job was cancelled, say) stays listed as
-- `stopped` with the reason until its user deletes it or creates a new one; only then is it
-- dismissed. Everything stopped so far was deleted, hence dismissed.
ALTER TABLE sessions ADD COLUMN dismissed BIGINT NOT NULL DEFAULT 0;
UPDATE sessions SET dismissed = 1 WHERE state = 'stopped';

DROP INDEX sessions_visible_id;
CREATE UNIQUE INDEX sessions_visible_id
    ON sessions (session_id) WHERE dismissed = 0 AND session_id IS NOT NULL;
