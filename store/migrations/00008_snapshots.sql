-- Snapshots and filesystem-only pauses (docs/persistence.md).
--
-- Snapshots (E2B's POST /sandboxes/{id}/snapshots)
-- are templates: a snapshot's builds are the sandbox's filesystem at the
-- time, as a layer over the template it ran on. snapshot_of names the
-- sandbox a snapshot template was last taken of; it is empty for every
-- other template. auto_pause_filesystem marks a sandbox whose pause on
-- timeout keeps only its files (E2B's autoPauseMemory: false).

-- +goose Up
ALTER TABLE templates ADD COLUMN snapshot_of TEXT NOT NULL DEFAULT '';
ALTER TABLE sandboxes ADD COLUMN auto_pause_filesystem BOOLEAN NOT NULL DEFAULT FALSE;

-- +goose Down
ALTER TABLE sandboxes DROP COLUMN auto_pause_filesystem;
ALTER TABLE templates DROP COLUMN snapshot_of;
