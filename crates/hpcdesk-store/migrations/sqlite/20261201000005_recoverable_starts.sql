-- Every desktop is recoverable from what was written before it was launched. A session now
-- carries, from its creation on:
-- - `marker`: the token the node agent puts on every process of the desktop (and a Slurm
--   job in its name), so that after a crash the desktop is found and adopted or stopped;
-- - `starter`: the hpcdesk instance that is starting it, so that others can tell a start
--   in progress from one whose instance died;
-- - `queued`: whether the desktop is a queued job (Slurm) followed in the background,
--   rather than a start some instance is waiting for.
-- The VNC password is stored (sealed) at creation too, before the desktop exists.
ALTER TABLE sessions ADD COLUMN marker TEXT NOT NULL DEFAULT '';
ALTER TABLE sessions ADD COLUMN starter TEXT NOT NULL DEFAULT '';
ALTER TABLE sessions ADD COLUMN queued INTEGER NOT NULL DEFAULT 0;
UPDATE sessions SET queued = 1 WHERE launcher = 'slurm' AND handle <> '';
CREATE INDEX sessions_by_marker ON sessions (marker);
