package store

import (
	"context"
	"fmt"
)

// Stats are the store's counts for the control plane's metrics.
type Stats interface {
	// SandboxCounts counts the sandboxes by state and by the runtime of
	// their host (Runtime "" for a host the store no longer has), in one
	// query.
	SandboxCounts(ctx context.Context) ([]SandboxCount, error)
}

// SandboxCount is how many sandboxes are in State on hosts of Runtime.
type SandboxCount struct {
	Runtime string
	State   SandboxState
	N       int
}

func (s *sqlStore) SandboxCounts(ctx context.Context) ([]SandboxCount, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT COALESCE(h.runtime, ''), s.state, COUNT(*) FROM sandboxes s
		LEFT JOIN hosts h ON h.id = s.host_id GROUP BY COALESCE(h.runtime, ''), s.state ORDER BY 1, 2`)
	if err != nil {
		return nil, fmt.Errorf("count sandboxes by state: %w", err)
	}
	defer rows.Close()
	var counts []SandboxCount
	for rows.Next() {
		var c SandboxCount
		if err := rows.Scan(&c.Runtime, &c.State, &c.N); err != nil {
			return nil, fmt.Errorf("count sandboxes by state: %w", err)
		}
		counts = append(counts, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count sandboxes by state: %w", err)
	}
	return counts, nil
}
