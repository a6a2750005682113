-- Per-team quotas. A team's row for a limit overrides the server's
-- default for that limit; a limit the team has no row for takes the
-- default. Limits are named (store.QuotaLimit), so a new limit needs no
-- migration. paused_at is when a sandbox was paused (NULL unless it is
-- paused): paused-sandbox retention counts from it. The (team_id, state)
-- index serves the usage sums every quota-checked create makes.

-- +goose Up
CREATE TABLE team_quotas (
    team_id TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    name    TEXT NOT NULL,
    value   BIGINT NOT NULL,
    PRIMARY KEY (team_id, name)
);
ALTER TABLE sandboxes ADD COLUMN paused_at BIGINT;
CREATE INDEX sandboxes_team_state ON sandboxes (team_id, state);

-- +goose Down
DROP INDEX sandboxes_team_state;
ALTER TABLE sandboxes DROP COLUMN paused_at;
DROP TABLE team_quotas;
