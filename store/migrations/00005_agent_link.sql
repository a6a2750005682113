-- The agent link is mutual TLS (issue 12, point 11). The control plane
-- keeps only the hash of each agent's heartbeat token: token_hash is
-- SHA-256, like API keys'. Existing plaintext tokens are hashed by the
-- store's Go code right after this migration (SQL has no portable
-- SHA-256) and the token column is then always ''.
-- cluster_ca holds the one CA of the agent link: in the database, so
-- that control-plane replicas on one PostgreSQL share it; id is always 1.

-- +goose Up
ALTER TABLE hosts ADD COLUMN token_hash BYTEA;
CREATE TABLE cluster_ca (
    id          INTEGER PRIMARY KEY,
    cert_pem    TEXT NOT NULL,
    key_pem     TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- +goose Down
DROP TABLE cluster_ca;
ALTER TABLE hosts DROP COLUMN token_hash;
