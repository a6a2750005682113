package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"

	"roost.dev/roost/errdefs"
)

// hashHostTokens finishes migration 00005: hosts registered before it
// have their agent token in plaintext; it is replaced by its hash. Safe to
// run on every open (nothing to do once done) and from several replicas at
// once (each row's update is idempotent).
func hashHostTokens(ctx context.Context, db *sql.DB, log *slog.Logger) error {
	rows, err := db.QueryContext(ctx, `SELECT id, token FROM hosts WHERE token <> ''`)
	if err != nil {
		return fmt.Errorf("hash host tokens: %w", err)
	}
	type plain struct{ id, token string }
	var todo []plain
	for rows.Next() {
		var p plain
		if err := rows.Scan(&p.id, &p.token); err != nil {
			rows.Close()
			return fmt.Errorf("hash host tokens: %w", err)
		}
		todo = append(todo, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("hash host tokens: %w", err)
	}
	for _, p := range todo {
		if _, err := db.ExecContext(ctx, `UPDATE hosts SET token_hash = $1, token = '' WHERE id = $2 AND token = $3`,
			HashKey(p.token), p.id, p.token); err != nil {
			return fmt.Errorf("hash host token of %s: %w", p.id, err)
		}
		log.Info("host token hashed", "host", p.id)
	}
	return nil
}

func (s *sqlStore) EnsureClusterCA(ctx context.Context, certPEM, keyPEM []byte) ([]byte, []byte, error) {
	if len(certPEM) == 0 || len(keyPEM) == 0 {
		return nil, nil, fmt.Errorf("ensure cluster CA: empty certificate or key: %w", errdefs.ErrInvalid)
	}
	// One statement: of replicas racing, the database keeps the first.
	if _, err := s.w.ExecContext(ctx, `INSERT INTO cluster_ca (id, cert_pem, key_pem, created_at)
		VALUES (1, $1, $2, $3) ON CONFLICT (id) DO NOTHING`, string(certPEM), string(keyPEM), s.clock.Now().UnixNano()); err != nil {
		return nil, nil, fmt.Errorf("ensure cluster CA: %w", err)
	}
	// Read back on the writer: the read pool may not see the insert yet.
	var c, k string
	err := s.w.QueryRowContext(ctx, `SELECT cert_pem, key_pem FROM cluster_ca WHERE id = 1`).Scan(&c, &k)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, fmt.Errorf("ensure cluster CA: vanished after insert: %w", errdefs.ErrUnavailable)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("ensure cluster CA: %w", err)
	}
	return []byte(c), []byte(k), nil
}
