package store

import (
	"context"
	"fmt"
)

// Stats are the store's counts for the control plane's metrics.
type Stats interface {
	// SandboxCounts counts the sandboxes by host and state, with the
	// vCPUs and memory they were given, in one query.
	SandboxCounts(ctx context.Context) ([]SandboxCount, error)
}

// SandboxCount is how many sandboxes of a host are in a state, and what
// they were given.
type SandboxCount struct {
	HostID   string
	State    SandboxState
	N        int
	VCPUs    int
	MemoryMB int64
}

func (s *sqlStore) SandboxCounts(ctx context.Context) ([]SandboxCount, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT host_id, state, COUNT(*), CAST(SUM(vcpus) AS BIGINT), CAST(SUM(memory_mb) AS BIGINT)
		FROM sandboxes GROUP BY host_id, state ORDER BY host_id, state`)
	if err != nil {
		return nil, fmt.Errorf("count sandboxes by host and state: %w", err)
	}
	defer rows.Close()
	var counts []SandboxCount
	for rows.Next() {
		var c SandboxCount
		if err := rows.Scan(&c.HostID, &c.State, &c.N, &c.VCPUs, &c.MemoryMB); err != nil {
			return nil, fmt.Errorf("count sandboxes by host and state: %w", err)
		}
		counts = append(counts, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count sandboxes by host and state: %w", err)
	}
	return counts, nil
}
