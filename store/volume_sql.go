package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"roost.dev/roost/errdefs"
)

// Volumes on SQL. AttachVolumes and DeleteVolume lock the volume's row
// (FOR UPDATE on PostgreSQL; SQLite serialises writes anyway) before
// they look at its holders, so a check and the write that depends on it
// see the same holders.

const volumeColumns = `id, team_id, name, size_mb, host_id, token_hash, created_at`

func scanVolume(row interface{ Scan(...any) error }) (Volume, error) {
	var v Volume
	var created sql.NullInt64
	if err := row.Scan(&v.ID, &v.TeamID, &v.Name, &v.SizeMB, &v.HostID, &v.TokenHash, &created); err != nil {
		return Volume{}, err
	}
	v.CreatedAt = fromNanos(created)
	return v, nil
}

func (s *sqlStore) CreateVolume(ctx context.Context, v Volume) error {
	if err := ValidVolumeName(v.Name); err != nil {
		return fmt.Errorf("create volume: %w", err)
	}
	if v.ID == "" || v.SizeMB <= 0 || v.HostID == "" || len(v.TokenHash) == 0 {
		return fmt.Errorf("create volume %s: id, size, host and token hash are required: %w", v.Name, errdefs.ErrInvalid)
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO volumes (`+volumeColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		v.ID, v.TeamID, v.Name, v.SizeMB, v.HostID, v.TokenHash, s.orNow(v.CreatedAt).UnixNano())
	if err != nil {
		return s.classify(err, "create volume "+v.Name)
	}
	return nil
}

func (s *sqlStore) GetVolume(ctx context.Context, teamID, id string) (Volume, error) {
	q, args := `SELECT `+volumeColumns+` FROM volumes WHERE id = $1`, []any{id}
	if teamID != "" {
		q, args = q+` AND team_id = $2`, append(args, teamID)
	}
	v, err := scanVolume(s.r.QueryRowContext(ctx, q, args...))
	if err != nil {
		return Volume{}, notFound(err, "volume "+id)
	}
	return v, nil
}

func (s *sqlStore) VolumeByName(ctx context.Context, teamID, name string) (Volume, error) {
	v, err := scanVolume(s.r.QueryRowContext(ctx, `SELECT `+volumeColumns+` FROM volumes WHERE team_id = $1 AND name = $2`, teamID, name))
	if err != nil {
		return Volume{}, notFound(err, "volume "+name)
	}
	return v, nil
}

func (s *sqlStore) ListVolumes(ctx context.Context, teamID string) ([]Volume, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+volumeColumns+` FROM volumes WHERE team_id = $1 ORDER BY name`, teamID)
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	defer rows.Close()
	var out []Volume
	for rows.Next() {
		v, err := scanVolume(rows)
		if err != nil {
			return nil, fmt.Errorf("list volumes: %w", err)
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

func (s *sqlStore) DeleteVolume(ctx context.Context, teamID, id string) error {
	return s.inTx(ctx, "delete volume "+id, func(tx *sql.Tx) error {
		v, err := lockVolume(ctx, tx, s.d, id)
		if err != nil {
			return err
		}
		if v.TeamID != teamID {
			return fmt.Errorf("volume %s: %w", id, errdefs.ErrNotFound)
		}
		holders, err := volumeHolders(ctx, tx, id)
		if err != nil {
			return err
		}
		if len(holders) > 0 {
			return &VolumeBusyError{Volume: v.Name, Sandbox: holders[0].SandboxID}
		}
		// Mounts of sandboxes that are no longer live go with it.
		if _, err := tx.ExecContext(ctx, `DELETE FROM sandbox_volumes WHERE volume_id = $1`, id); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM volumes WHERE id = $1`, id)
		return one(res, err, "volume "+id)
	})
}

func (s *sqlStore) AttachVolumes(ctx context.Context, sandboxID string, mounts []VolumeMount) error {
	if len(mounts) == 0 {
		return nil
	}
	return s.inTx(ctx, "attach volumes to sandbox "+sandboxID, func(tx *sql.Tx) error {
		for _, m := range mounts {
			if err := attachIn(ctx, tx, s.d, sandboxID, m); err != nil {
				return err
			}
		}
		return nil
	})
}

// attachIn adds one mount of sandboxID inside tx, refusing a second
// writer.
func attachIn(ctx context.Context, tx *sql.Tx, d dialect, sandboxID string, m VolumeMount) error {
	v, err := lockVolume(ctx, tx, d, m.VolumeID)
	if err != nil {
		return err
	}
	var hostID string
	if err := tx.QueryRowContext(ctx, `SELECT host_id FROM sandboxes WHERE id = $1`, sandboxID).Scan(&hostID); err != nil {
		return notFound(err, "sandbox "+sandboxID)
	}
	if hostID != v.HostID {
		return fmt.Errorf("volume %s is on host %s, sandbox %s on host %s (the volume moved): try again: %w", v.Name, v.HostID, sandboxID, hostID, errdefs.ErrConflict)
	}
	if !m.ReadOnly {
		holders, err := volumeHolders(ctx, tx, m.VolumeID)
		if err != nil {
			return err
		}
		for _, h := range holders {
			if !h.ReadOnly && h.SandboxID != sandboxID {
				return &VolumeBusyError{Volume: v.Name, Sandbox: h.SandboxID, Writable: true}
			}
		}
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO sandbox_volumes (sandbox_id, volume_id, path, read_only) VALUES ($1, $2, $3, $4)`,
		sandboxID, m.VolumeID, m.Path, m.ReadOnly)
	if err != nil {
		return fmt.Errorf("mount of volume %s at %s: %w", v.Name, m.Path, err)
	}
	return nil
}

// lockVolume reads a volume and locks its row for the rest of tx.
func lockVolume(ctx context.Context, tx *sql.Tx, d dialect, id string) (Volume, error) {
	v, err := scanVolume(tx.QueryRowContext(ctx, `SELECT `+volumeColumns+` FROM volumes WHERE id = $1`+d.forUpdate, id))
	if err != nil {
		return Volume{}, notFound(err, "volume "+id)
	}
	return v, nil
}

func (s *sqlStore) VolumeHolders(ctx context.Context, volumeID string) ([]VolumeMount, error) {
	ms, err := volumeHolders(ctx, s.r, volumeID)
	if err != nil {
		return nil, fmt.Errorf("holders of volume %s: %w", volumeID, err)
	}
	return ms, nil
}

// volumeHolders returns the mounts of the volume by live sandboxes,
// writable ones first.
func volumeHolders(ctx context.Context, q querier, volumeID string) ([]VolumeMount, error) {
	args := []any{volumeID}
	for _, st := range liveStates {
		args = append(args, string(st))
	}
	return queryMounts(ctx, q, `SELECT v.sandbox_id, v.volume_id, v.path, v.read_only
		FROM sandbox_volumes v JOIN sandboxes s ON s.id = v.sandbox_id
		WHERE v.volume_id = $1 AND s.state IN (`+placeholders(2, len(liveStates))+`)
		ORDER BY v.read_only, v.sandbox_id, v.path`, args...)
}

func (s *sqlStore) SandboxVolumes(ctx context.Context, sandboxID string) ([]VolumeMount, error) {
	ms, err := queryMounts(ctx, s.r, `SELECT sandbox_id, volume_id, path, read_only FROM sandbox_volumes
		WHERE sandbox_id = $1 ORDER BY path`, sandboxID)
	if err != nil {
		return nil, fmt.Errorf("volumes of sandbox %s: %w", sandboxID, err)
	}
	return ms, nil
}

func queryMounts(ctx context.Context, q querier, query string, args ...any) ([]VolumeMount, error) {
	rows, err := q.QueryContext(ctx, strings.TrimSpace(query), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []VolumeMount
	for rows.Next() {
		var m VolumeMount
		if err := rows.Scan(&m.SandboxID, &m.VolumeID, &m.Path, &m.ReadOnly); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

func (s *sqlStore) MoveVolume(ctx context.Context, id, fromHost, toHost string) error {
	if fromHost == "" || toHost == "" {
		return fmt.Errorf("move volume %s: both hosts are required: %w", id, errdefs.ErrInvalid)
	}
	return s.inTx(ctx, "move volume "+id, func(tx *sql.Tx) error {
		v, err := lockVolume(ctx, tx, s.d, id)
		if err != nil {
			return err
		}
		if v.HostID != fromHost {
			return fmt.Errorf("volume %s is on host %s, not %s: %w", v.Name, v.HostID, fromHost, errdefs.ErrConflict)
		}
		holders, err := volumeHolders(ctx, tx, id)
		if err != nil {
			return err
		}
		if len(holders) > 0 {
			return &VolumeBusyError{Volume: v.Name, Sandbox: holders[0].SandboxID}
		}
		res, err := tx.ExecContext(ctx, `UPDATE volumes SET host_id = $1 WHERE id = $2`, toHost, id)
		return one(res, err, "volume "+id)
	})
}

func (s *sqlStore) SetHostVolumeDir(ctx context.Context, hostID, volumeDirID string) error {
	res, err := s.w.ExecContext(ctx, `UPDATE hosts SET volume_dir_id = $1 WHERE id = $2`, volumeDirID, hostID)
	return one(res, err, "host "+hostID)
}
