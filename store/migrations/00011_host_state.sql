-- The (host_id, state) index serves the count of a host's active
-- sandboxes that scheduling makes on every create: it reads index
-- entries only, however many stopped records the host has.

-- +goose Up
CREATE INDEX sandboxes_host_state ON sandboxes (host_id, state);

-- +goose Down
DROP INDEX sandboxes_host_state;
