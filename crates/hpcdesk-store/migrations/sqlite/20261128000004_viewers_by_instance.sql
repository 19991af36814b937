-- Open viewer connections as each hpcdesk instance reports them, so that every instance
-- sharing this database lists the right `connections` and never sweeps a desktop in use
-- elsewhere. An instance's rows count only while its heartbeat is fresh.
CREATE TABLE instances (
    instance  TEXT PRIMARY KEY NOT NULL,
    seen_at   INTEGER NOT NULL
);

CREATE TABLE viewers (
    instance     TEXT NOT NULL,
    session_key  TEXT NOT NULL,
    connections  INTEGER NOT NULL,
    PRIMARY KEY (instance, session_key)
);
