-- Platform accounts for sites without the AC platform (token issuance), their access keys,
-- the organisations allowed to call on their behalf, and the audit log.

CREATE TABLE users (
    name            TEXT PRIMARY KEY NOT NULL,
    user_id         TEXT NOT NULL,
    -- argon2id PHC string
    password_hash   TEXT NOT NULL,
    compute_user    TEXT NOT NULL,
    -- the token `role` claim value
    role            TEXT NOT NULL,
    account_status  TEXT NOT NULL,
    home_path       TEXT NOT NULL DEFAULT '',
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE TABLE orgs (
    org_id      TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL
);

-- The secret key is kept sealed with the server key: the database alone cannot sign.
CREATE TABLE access_keys (
    access_key     TEXT PRIMARY KEY NOT NULL,
    user_name      TEXT NOT NULL REFERENCES users (name),
    secret_sealed  BYTEA NOT NULL,
    created_at     BIGINT NOT NULL,
    revoked_at     BIGINT
);

-- Signatures already used (replay protection), kept until their timestamp can no longer pass.
CREATE TABLE used_signatures (
    signature   TEXT PRIMARY KEY NOT NULL,
    expires_at  BIGINT NOT NULL
);

CREATE TABLE audit (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    user_name   TEXT NOT NULL DEFAULT '',
    session_id  TEXT NOT NULL DEFAULT '',
    peer        TEXT NOT NULL DEFAULT '',
    detail      TEXT NOT NULL DEFAULT ''
);

CREATE INDEX audit_by_time ON audit (at);
CREATE INDEX audit_by_user ON audit (user_name, at);
