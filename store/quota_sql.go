package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
)

// Quotas on SQL. A quota-checked write locks the team's row first (FOR
// UPDATE on PostgreSQL; SQLite's one writer with IMMEDIATE transactions
// serialises every write anyway), then sums the team's usage and writes,
// all in one transaction: of two creates racing for the last slot, the
// second sees the first's row and is refused.

func (s *sqlStore) TeamQuota(ctx context.Context, teamID string) (Quota, error) {
	if _, err := s.GetTeam(ctx, teamID); err != nil {
		return nil, err
	}
	q, err := readQuota(ctx, s.r, teamID)
	if err != nil {
		return nil, fmt.Errorf("team quota %s: %w", teamID, err)
	}
	return q, nil
}

func readQuota(ctx context.Context, q querier, teamID string) (Quota, error) {
	rows, err := q.QueryContext(ctx, `SELECT name, value FROM team_quotas WHERE team_id = $1`, teamID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := Quota{}
	for rows.Next() {
		var name string
		var v int64
		if err := rows.Scan(&name, &v); err != nil {
			return nil, err
		}
		out[QuotaLimit(name)] = v
	}
	return out, rows.Err()
}

func (s *sqlStore) SetTeamQuota(ctx context.Context, teamID string, q Quota) error {
	if err := q.Validate(); err != nil {
		return fmt.Errorf("set quota of team %s: %w", teamID, err)
	}
	return s.inTx(ctx, "set quota of team "+teamID, func(tx *sql.Tx) error {
		if err := lockTeam(ctx, tx, s.d, teamID); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM team_quotas WHERE team_id = $1`, teamID); err != nil {
			return err
		}
		for _, l := range slices.Sorted(maps.Keys(q)) {
			if _, err := tx.ExecContext(ctx, `INSERT INTO team_quotas (team_id, name, value) VALUES ($1, $2, $3)`,
				teamID, string(l), q[l]); err != nil {
				return fmt.Errorf("insert %s: %w", l, err)
			}
		}
		return nil
	})
}

func (s *sqlStore) TeamUsage(ctx context.Context, teamID string) (Usage, error) {
	u, err := teamUsage(ctx, s.r, teamID, "")
	if err != nil {
		return Usage{}, fmt.Errorf("usage of team %s: %w", teamID, err)
	}
	return u, nil
}

// teamUsage sums what the team's sandboxes but except hold.
func teamUsage(ctx context.Context, q querier, teamID, except string) (Usage, error) {
	var u Usage
	err := q.QueryRowContext(ctx, `SELECT `+usageSums+` FROM sandboxes WHERE team_id = $1 AND id <> $2`, teamID, except).
		Scan(&u.Sandboxes, &u.Paused, &u.VCPUs, &u.MemoryMB, &u.DiskMB)
	return u, err
}

// usageSums are, in a SELECT of sandboxes, the sums of a Usage in the
// order of its fields. The CASTs: PostgreSQL sums BIGINT as NUMERIC.
const usageSums = `CAST(COALESCE(SUM(CASE WHEN state IN ('starting', 'running') THEN 1 ELSE 0 END), 0) AS BIGINT),
		CAST(COALESCE(SUM(CASE WHEN state = 'paused' THEN 1 ELSE 0 END), 0) AS BIGINT),
		CAST(COALESCE(SUM(CASE WHEN state IN ('starting', 'running') THEN vcpus ELSE 0 END), 0) AS BIGINT),
		CAST(COALESCE(SUM(CASE WHEN state IN ('starting', 'running') THEN memory_mb ELSE 0 END), 0) AS BIGINT),
		CAST(COALESCE(SUM(CASE WHEN state IN ('starting', 'running', 'paused') THEN disk_mb ELSE 0 END), 0) AS BIGINT)`

// lockTeam takes the team's row lock for the rest of tx; an unknown team
// is errdefs.ErrNotFound.
func lockTeam(ctx context.Context, tx *sql.Tx, d dialect, teamID string) error {
	var id string
	err := tx.QueryRowContext(ctx, `SELECT id FROM teams WHERE id = $1`+d.forUpdate, teamID).Scan(&id)
	if err != nil {
		return notFound(err, "team "+teamID)
	}
	return nil
}

// admitIn checks, inside tx, that the team's sandbox going from before
// to after fits its quota: defaults under the team's own limits.
func admitIn(ctx context.Context, tx *sql.Tx, d dialect, defaults Quota, before, after Sandbox) error {
	if err := lockTeam(ctx, tx, d, after.TeamID); err != nil {
		return err
	}
	own, others, err := quotaAndUsage(ctx, tx, d, after.TeamID, after.ID)
	if err != nil {
		return err
	}
	return admit(MergeQuota(defaults, own), others, usageOf(before), usageOf(after))
}

// quotaAndUsage reads the team's own limits and sums what its sandboxes
// but except hold, in one statement: every create asks. It runs after
// lockTeam, in a statement of its own, so that on PostgreSQL it sees
// what a create that held the lock before it wrote (a statement sees
// the rows committed when it began, and one that waited for the lock
// began before).
func quotaAndUsage(ctx context.Context, tx *sql.Tx, d dialect, teamID, except string) (Quota, Usage, error) {
	var own string
	var u Usage
	err := tx.QueryRowContext(ctx, `SELECT `+d.objectOf("name", "value", "team_quotas WHERE team_id = $1")+`, `+usageSums+`
		FROM sandboxes WHERE team_id = $1 AND id <> $2`, teamID, except).
		Scan(&own, &u.Sandboxes, &u.Paused, &u.VCPUs, &u.MemoryMB, &u.DiskMB)
	if err != nil {
		return nil, Usage{}, fmt.Errorf("read quota and usage: %w", err)
	}
	q := Quota{}
	if err := json.Unmarshal([]byte(own), &q); err != nil {
		return nil, Usage{}, fmt.Errorf("decode quota: %w", err)
	}
	return q, u, nil
}

func (s *sqlStore) CreateSandboxWithin(ctx context.Context, sb Sandbox, defaults Quota) error {
	return s.createSandbox(ctx, sb, func(tx *sql.Tx, sb Sandbox) error {
		return admitIn(ctx, tx, s.d, defaults, Sandbox{}, sb)
	})
}

func (s *sqlStore) UpdateSandboxWithin(ctx context.Context, id string, defaults Quota, fn func(*Sandbox) error) (Sandbox, error) {
	return s.updateSandbox(ctx, id, fn, func(tx *sql.Tx, before, after Sandbox) error {
		return admitIn(ctx, tx, s.d, defaults, before, after)
	})
}
