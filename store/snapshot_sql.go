package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"roost.dev/roost/errdefs"
)

// Snapshots on SQL: a snapshot's template and its ready build are written
// in one transaction, so a snapshot is listed whole or not at all.

func (s *sqlStore) PutSnapshot(ctx context.Context, t Template, b TemplateBuild) (Template, error) {
	switch {
	case t.ID == "" || t.TeamID == "" || t.Name == "" || t.SnapshotOf == "":
		return Template{}, fmt.Errorf("put snapshot: empty id, team, name or sandbox: %w", errdefs.ErrInvalid)
	case b.ID == "" || !validDigest(b.Manifest) || b.SizeBytes < 0 || len(b.Tags) == 0:
		return Template{}, fmt.Errorf("put snapshot %s: build %q: want an id, a manifest, a size and tags: %w", t.Name, b.ID, errdefs.ErrInvalid)
	}
	tagsJSON, err := json.Marshal(b.Tags)
	if err != nil {
		return Template{}, fmt.Errorf("put snapshot %s: %w", t.Name, err)
	}
	err = s.inTx(ctx, "put snapshot "+t.Name, func(tx *sql.Tx) error {
		now := s.clock.Now().UnixNano()
		if err := putSnapshotTemplate(ctx, tx, &t, now); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO template_builds (`+buildColumns+`)
			VALUES ($1, $2, 'ready', '', $3, $4, $5, '', $6, $7, '', $8, $8, $8)`,
			b.ID, t.ID, string(tagsJSON), b.Manifest, b.SizeBytes, b.CPUs, b.MemoryMB, now)
		if err != nil {
			return err
		}
		return setTags(ctx, tx, t.ID, b.ID, b.Tags, now)
	})
	if err != nil {
		return Template{}, s.classify(err, "put snapshot "+t.Name)
	}
	return t, nil
}

// putSnapshotTemplate makes t, or takes the ID and creation time of the
// team's snapshot template of its name, which then names t's sandbox.
func putSnapshotTemplate(ctx context.Context, tx *sql.Tx, t *Template, now int64) error {
	cur, err := scanTemplate(tx.QueryRowContext(ctx, `SELECT `+templateColumns+` FROM templates WHERE name = $1`, t.Name))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		_, err := tx.ExecContext(ctx, `INSERT INTO templates (`+templateColumns+`) VALUES ($1, $2, $3, $4, $5, $5, $6)`,
			t.ID, t.TeamID, t.Name, t.Public, now, t.SnapshotOf)
		t.CreatedAt = time.Unix(0, now).UTC()
		t.UpdatedAt = t.CreatedAt
		return err
	case err != nil:
		return err
	case cur.TeamID != t.TeamID || cur.SnapshotOf == "":
		return fmt.Errorf("the name %q is taken by a template that is not a snapshot of this team: %w", t.Name, errdefs.ErrConflict)
	}
	_, err = tx.ExecContext(ctx, `UPDATE templates SET snapshot_of = $1, updated_at = $2 WHERE id = $3`, t.SnapshotOf, now, cur.ID)
	cur.SnapshotOf, cur.UpdatedAt = t.SnapshotOf, time.Unix(0, now).UTC()
	*t = cur
	return err
}
