-- A cordoned host takes no new sandboxes and keeps those it has, whatever
-- its health: the operator's mark, apart from the state the reconciler
-- sets (ready, down), so that a cordoned host that goes down and comes
-- back stays cordoned.

-- +goose Up
ALTER TABLE hosts ADD COLUMN cordoned BOOLEAN NOT NULL DEFAULT FALSE;

-- +goose Down
ALTER TABLE hosts DROP COLUMN cordoned;
