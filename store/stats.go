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
	// ActiveSandboxesByHost counts each host's sandboxes that hold a slot
	// (starting, running, paused), in one query; hosts with none are
	// absent.
	ActiveSandboxesByHost(ctx context.Context) (map[string]int, error)
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

func (s *sqlStore) ActiveSandboxesByHost(ctx context.Context) (map[string]int, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT host_id, COUNT(*) FROM sandboxes WHERE state IN ($1, $2, $3) GROUP BY host_id`,
		SandboxStarting, SandboxRunning, SandboxPaused)
	if err != nil {
		return nil, fmt.Errorf("count active sandboxes by host: %w", err)
	}
	defer rows.Close()
	counts := map[string]int{}
	for rows.Next() {
		var host string
		var n int
		if err := rows.Scan(&host, &n); err != nil {
			return nil, fmt.Errorf("count active sandboxes by host: %w", err)
		}
		counts[host] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count active sandboxes by host: %w", err)
	}
	return counts, nil
}
