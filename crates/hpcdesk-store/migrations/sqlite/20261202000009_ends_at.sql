-- When the desktop ends by its time limit (ms since the epoch): a Slurm job's EndTime, or the
-- creation plus lifecycle.max_lifetime and any extensions; NULL: no limit.
ALTER TABLE sessions ADD COLUMN ends_at BIGINT;
