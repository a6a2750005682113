-- Volumes (docs/persistence.md): a team's named, size-limited
-- filesystems that outlive sandboxes. A volume lives on one host (its
-- image is in that agent's volume directory): host_id names it. The
-- volume's content token is stored as its SHA-256, as API keys are.
-- sandbox_volumes lists each sandbox's mounts; a mount holds its volume
-- while the sandbox is live (starting, running, paused or lost), and
-- goes with the sandbox's record (ON DELETE CASCADE). At most one live
-- writable mount per volume: the store checks it in the transaction
-- that adds the mounts.

-- +goose Up
CREATE TABLE volumes (
    id          TEXT PRIMARY KEY,
    team_id     TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    size_mb     BIGINT NOT NULL,
    host_id     TEXT NOT NULL,
    token_hash  BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (team_id, name)
);

CREATE TABLE sandbox_volumes (
    sandbox_id  TEXT NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    volume_id   TEXT NOT NULL REFERENCES volumes (id),
    path        TEXT NOT NULL,
    read_only   BOOLEAN NOT NULL,
    PRIMARY KEY (sandbox_id, path)
);
CREATE INDEX sandbox_volumes_volume ON sandbox_volumes (volume_id);

-- +goose Down
DROP TABLE sandbox_volumes;
DROP TABLE volumes;
