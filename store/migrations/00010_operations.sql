-- Running roost for many teams (docs/operations.md): operator tokens,
-- the audit log, sandbox lifecycle events, and webhooks with their
-- deliveries.
--
-- admin_tokens are operator credentials (X-Admin-Token), kept as hashes
-- like API keys; they belong to no team. audit_log and events are
-- append-only and pruned by age; both are read in (at, id) order, so
-- their IDs only break ties. A webhook's secret is kept as given: the
-- control plane signs every delivery with it. webhook_deliveries is the
-- queue and the log at once: one row per event per webhook, delivered in
-- (event_at, event_id) order per webhook; lease_until keeps two control
-- planes from sending one delivery at once. An event's running_delta is
-- how it changed its team's count of running sandboxes (-1, 0 or 1):
-- team metrics replay them back from the count now.

-- +goose Up
CREATE TABLE admin_tokens (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    hash         BYTEA NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    mask_suffix  TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT
);

CREATE TABLE audit_log (
    id      TEXT PRIMARY KEY,
    at      BIGINT NOT NULL,
    team_id TEXT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    source  TEXT NOT NULL,
    status  INTEGER NOT NULL,
    error   TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at, id);
CREATE INDEX audit_log_team ON audit_log (team_id, at, id);

CREATE TABLE events (
    id           TEXT PRIMARY KEY,
    at           BIGINT NOT NULL,
    team_id      TEXT NOT NULL,
    sandbox_id   TEXT NOT NULL,
    type         TEXT NOT NULL,
    template_id  TEXT NOT NULL,
    build_id     TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    data         TEXT NOT NULL,
    running_delta INTEGER NOT NULL
);
CREATE INDEX events_team ON events (team_id, at, id);
CREATE INDEX events_sandbox ON events (sandbox_id, at, id);
CREATE INDEX events_at ON events (at, id);

CREATE TABLE webhooks (
    id         TEXT PRIMARY KEY,
    team_id    TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    url        TEXT NOT NULL,
    secret     TEXT NOT NULL,
    events     TEXT NOT NULL,
    enabled    BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX webhooks_team ON webhooks (team_id, created_at, id);

CREATE TABLE webhook_deliveries (
    id          TEXT PRIMARY KEY,
    webhook_id  TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id    TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    event_at    BIGINT NOT NULL,
    state       TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    next_at     BIGINT NOT NULL,
    lease_until BIGINT,
    last_status INTEGER NOT NULL,
    last_error  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    done_at     BIGINT
);
CREATE INDEX webhook_deliveries_queue ON webhook_deliveries (state, webhook_id, event_at, event_id);
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (webhook_id, event_at, event_id);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);

-- +goose Down
DROP TABLE webhook_deliveries;
DROP TABLE webhooks;
DROP TABLE events;
DROP TABLE audit_log;
DROP TABLE admin_tokens;
