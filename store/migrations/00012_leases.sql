-- Leases: work that must run on one control plane at a time (the
-- leader's loops). A lease is held by holder until expires_at (UTC
-- nanoseconds by the database's clock, never a replica's); a holder
-- renews it before then, anyone may take it after.

-- +goose Up
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- +goose Down
DROP TABLE leases;
