-- Access tokens (E2B's Authorization: Bearer credential) live beside API
-- keys: a credential's kind says which header it is accepted in. The mask
-- suffix is the key's last characters, shown with the prefix so people can
-- tell keys apart (E2B's IdentifierMaskingDetails). Existing rows are API
-- keys with no suffix on record.

-- +goose Up
ALTER TABLE api_keys ADD COLUMN kind TEXT NOT NULL DEFAULT 'api_key';
ALTER TABLE api_keys ADD COLUMN mask_suffix TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE api_keys DROP COLUMN mask_suffix;
ALTER TABLE api_keys DROP COLUMN kind;
