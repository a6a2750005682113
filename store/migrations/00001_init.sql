-- The initial schema. It runs unchanged on SQLite and PostgreSQL, so it
-- uses only types both understand: TEXT, BIGINT, INTEGER, BOOLEAN and
-- BYTEA (SQLite gives BYTEA numeric affinity, which stores a blob as is).
-- Timestamps are BIGINT nanoseconds since the Unix epoch, UTC; NULL means
-- "never"/"unset". Maps other than metadata are JSON in TEXT columns.

-- +goose Up
CREATE TABLE teams (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    team_id      TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    hash         BYTEA NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT
);
CREATE INDEX api_keys_team ON api_keys (team_id, created_at, id);

CREATE TABLE registration_tokens (
    hash       BYTEA PRIMARY KEY,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);

CREATE TABLE hosts (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    url             TEXT NOT NULL,
    token           TEXT NOT NULL,
    runtime         TEXT NOT NULL,
    capabilities    TEXT,
    cpus            INTEGER NOT NULL,
    memory_mb       BIGINT NOT NULL,
    max_sandboxes   INTEGER NOT NULL,
    state           TEXT NOT NULL,
    registered_at   BIGINT NOT NULL,
    last_heartbeat  BIGINT,
    used_sandboxes  INTEGER NOT NULL DEFAULT 0,
    used_vcpus      INTEGER NOT NULL DEFAULT 0,
    used_memory_mb  BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE sandboxes (
    id                   TEXT PRIMARY KEY,
    team_id              TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    host_id              TEXT NOT NULL,
    template_id          TEXT NOT NULL,
    alias                TEXT NOT NULL,
    client_id            TEXT NOT NULL,
    state                TEXT NOT NULL,
    vcpus                INTEGER NOT NULL,
    memory_mb            BIGINT NOT NULL,
    disk_mb              BIGINT NOT NULL,
    env_vars             TEXT NOT NULL,
    envd_version         TEXT NOT NULL,
    envd_access_token    TEXT NOT NULL,
    traffic_access_token TEXT NOT NULL,
    allow_public_traffic BOOLEAN NOT NULL,
    allow_internet       BOOLEAN NOT NULL,
    auto_pause           BOOLEAN NOT NULL,
    timeout_secs         BIGINT NOT NULL,
    started_at           BIGINT,
    end_at               BIGINT,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL,
    error                TEXT NOT NULL
);
CREATE INDEX sandboxes_team_order ON sandboxes (team_id, created_at, id);
CREATE INDEX sandboxes_order ON sandboxes (created_at, id);
CREATE INDEX sandboxes_host ON sandboxes (host_id);
CREATE INDEX sandboxes_end ON sandboxes (end_at);

CREATE TABLE sandbox_metadata (
    sandbox_id TEXT NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    PRIMARY KEY (sandbox_id, key)
);
CREATE INDEX sandbox_metadata_kv ON sandbox_metadata (key, value);

-- +goose Down
DROP TABLE sandbox_metadata;
DROP TABLE sandboxes;
DROP TABLE hosts;
DROP TABLE registration_tokens;
DROP TABLE api_keys;
DROP TABLE teams;
