-- Volumes on shared storage (docs/persistence.md, Volumes): a host
-- reports the ID of its volume directory, the same on every host that
-- shares the directory; a volume of one such host may move to another
-- (volumes.host_id, a compare-and-swap while no live sandbox holds it).
-- '' is a host that reported none: its volumes are its own.

-- +goose Up
ALTER TABLE hosts ADD COLUMN volume_dir_id TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE hosts DROP COLUMN volume_dir_id;
