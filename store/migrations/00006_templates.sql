-- Content templates (docs/templates.md): a team's templates, their
-- builds with each build's log, the tags that point at builds, and the
-- files a team uploaded for COPY steps. Blobs themselves (layers,
-- manifests, uploaded tars) live in the control plane's content store,
-- named by digest; the rows hold digests only.
--
-- templates.name is unique across teams (creates resolve a bare name).
-- A build's spec, reason and tags are JSON in TEXT columns; level of a
-- log entry is 1 debug, 2 info, 3 warn, 4 error, so a level filter is a
-- comparison. A build in 'building' has a lease: the control plane
-- running it renews lease_until; one whose lease ran out was left by a
-- control plane that stopped, and is marked error.
-- server_secrets holds secrets every control-plane replica must share
-- (the key that signs template file upload URLs).

-- +goose Up
CREATE TABLE templates (
    id          TEXT PRIMARY KEY,
    team_id     TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    name        TEXT NOT NULL UNIQUE,
    public      BOOLEAN NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX templates_team ON templates (team_id);

CREATE TABLE template_builds (
    id           TEXT PRIMARY KEY,
    template_id  TEXT NOT NULL REFERENCES templates (id) ON DELETE CASCADE,
    status       TEXT NOT NULL,
    spec         TEXT NOT NULL,
    tags         TEXT NOT NULL,
    manifest     TEXT NOT NULL,
    size_bytes   BIGINT NOT NULL,
    reason       TEXT NOT NULL,
    cpus         INTEGER NOT NULL,
    memory_mb    BIGINT NOT NULL,
    host_id      TEXT NOT NULL,
    log_count    INTEGER NOT NULL DEFAULT 0,
    log_dropped  BIGINT NOT NULL DEFAULT 0,
    lease_until  BIGINT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    finished_at  BIGINT
);
CREATE INDEX template_builds_template ON template_builds (template_id, created_at);
CREATE INDEX template_builds_status ON template_builds (status);

CREATE TABLE template_build_logs (
    build_id  TEXT NOT NULL REFERENCES template_builds (id) ON DELETE CASCADE,
    seq       INTEGER NOT NULL,
    time      BIGINT NOT NULL,
    level     INTEGER NOT NULL,
    step      TEXT NOT NULL,
    message   TEXT NOT NULL,
    PRIMARY KEY (build_id, seq)
);

CREATE TABLE template_tags (
    template_id  TEXT NOT NULL REFERENCES templates (id) ON DELETE CASCADE,
    tag          TEXT NOT NULL,
    build_id     TEXT NOT NULL REFERENCES template_builds (id) ON DELETE CASCADE,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (template_id, tag)
);

CREATE TABLE template_files (
    team_id      TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    hash         TEXT NOT NULL,
    template_id  TEXT NOT NULL,
    digest       TEXT NOT NULL,
    size_bytes   BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (team_id, hash)
);
CREATE INDEX template_files_template ON template_files (template_id);

CREATE TABLE server_secrets (
    name        TEXT PRIMARY KEY,
    value       BYTEA NOT NULL,
    created_at  BIGINT NOT NULL
);

-- +goose Down
DROP TABLE server_secrets;
DROP TABLE template_files;
DROP TABLE template_tags;
DROP TABLE template_build_logs;
DROP TABLE template_builds;
DROP TABLE templates;
