-- Auto-resume on traffic (E2B's autoResume): a paused sandbox with it set
-- is resumed by the proxy when a request arrives. Existing sandboxes keep
-- the old behaviour (409 while paused). FALSE is a keyword on both SQLite
-- (3.23+) and PostgreSQL; SQLite drops columns since 3.35.

-- +goose Up
ALTER TABLE sandboxes ADD COLUMN auto_resume BOOLEAN NOT NULL DEFAULT FALSE;

-- +goose Down
ALTER TABLE sandboxes DROP COLUMN auto_resume;
