-- Desktop sessions. `key` is internal; `session_id` (node--user--SIG--display) is known once
-- the agent picked a display. Times are milliseconds since the Unix epoch.
CREATE TABLE sessions (
    key            TEXT PRIMARY KEY NOT NULL,
    session_id     TEXT,
    owner          TEXT NOT NULL,
    user_id        TEXT NOT NULL DEFAULT '',
    invoker        TEXT NOT NULL DEFAULT '',
    compute_user   TEXT NOT NULL,
    node           TEXT,
    display        BIGINT,
    host           TEXT,
    port           BIGINT,
    state          TEXT NOT NULL,
    status_reason  TEXT NOT NULL DEFAULT '',
    geometry       TEXT NOT NULL,
    vnc_password   BYTEA,
    launcher       TEXT NOT NULL,
    handle         TEXT NOT NULL DEFAULT '',
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    last_input_at  BIGINT
);

-- One live session per platform user: concurrent creates race here, not in memory,
-- so it also holds when several hpcdesk instances share one database.
CREATE UNIQUE INDEX sessions_one_live_per_owner
    ON sessions (owner) WHERE state IN ('pending', 'starting', 'running');

-- A session id names one desktop until that desktop is stopped.
CREATE UNIQUE INDEX sessions_visible_id
    ON sessions (session_id) WHERE state <> 'stopped' AND session_id IS NOT NULL;

CREATE INDEX sessions_by_state ON sessions (state);

-- Connection grants issued by launchurl. Only a hash of the token is kept.
CREATE TABLE grants (
    token_hash   BYTEA PRIMARY KEY NOT NULL,
    session_key  TEXT NOT NULL REFERENCES sessions (key),
    owner        TEXT NOT NULL,
    view_only    BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    revoked      BIGINT NOT NULL DEFAULT 0
);

CREATE INDEX grants_by_session ON grants (session_key);
