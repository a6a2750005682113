package controlplane

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"roost.dev/roost/store"
)

// hostJSON is one host of GET /v1/hosts. It never carries the host's
// token, which is a credential to the agent.
type hostJSON struct {
	ID           string          `json:"id"`
	Name         string          `json:"name"`
	URL          string          `json:"url"`
	State        string          `json:"state"`
	Runtime      string          `json:"runtime"`
	Capacity     hostCapacity    `json:"capacity"`
	Usage        hostUsage       `json:"usage"`
	Capabilities json.RawMessage `json:"capabilities,omitempty"`
	RegisteredAt time.Time       `json:"registeredAt"`
	// LastHeartbeat is null until the host's first heartbeat (for the
	// agent in `roost up`'s process, the reconciler's first listing).
	LastHeartbeat *time.Time `json:"lastHeartbeat"`
	// Sandboxes is how many sandboxes the store places on the host in a
	// state that holds a slot (starting, running, paused), of every team.
	Sandboxes int `json:"sandboxes"`
	// Running is how many of those are starting or running: what a drain
	// could not pause and waits for.
	Running int `json:"running"`
	// Cordoned hosts take no new sandboxes (the operator's mark).
	Cordoned bool `json:"cordoned"`
}

type hostCapacity struct {
	CPUs         int   `json:"cpus"`
	MemoryMB     int64 `json:"memoryMB"`
	MaxSandboxes int   `json:"maxSandboxes"` // 0: no limit
}

// hostUsage is what the host last reported in a heartbeat.
type hostUsage struct {
	Sandboxes int   `json:"sandboxes"`
	VCPUs     int   `json:"vcpus"`
	MemoryMB  int64 `json:"memoryMB"`
}

// listHosts is GET /v1/hosts, ordered by ID.
func (s *Server) listHosts(w http.ResponseWriter, r *http.Request, _ store.APIKey) {
	ctx := r.Context()
	hosts, err := s.store.ListHosts(ctx)
	if err != nil {
		s.fail(w, r, "list hosts", err)
		return
	}
	out := make([]hostJSON, 0, len(hosts))
	for _, h := range hosts {
		hj, err := s.hostView(ctx, h)
		if err != nil {
			s.fail(w, r, "list hosts", err)
			return
		}
		out = append(out, hj)
	}
	writeJSON(w, http.StatusOK, out)
}

// hostView is h as the API shows it.
func (s *Server) hostView(ctx context.Context, h store.Host) (hostJSON, error) {
	n, err := s.activeSandboxes(ctx, h.ID)
	if err != nil {
		return hostJSON{}, err
	}
	running, err := s.store.CountSandboxes(ctx, store.SandboxFilter{HostID: h.ID, States: []store.SandboxState{store.SandboxStarting, store.SandboxRunning}})
	if err != nil {
		return hostJSON{}, fmt.Errorf("count running sandboxes of host %s: %w", h.ID, err)
	}
	hj := hostJSON{
		ID: h.ID, Name: h.Name, URL: h.URL, State: string(h.State), Runtime: h.Runtime,
		Capacity:     hostCapacity{CPUs: h.CPUs, MemoryMB: h.MemoryMB, MaxSandboxes: h.MaxSandboxes},
		Usage:        hostUsage{Sandboxes: h.Usage.Sandboxes, VCPUs: h.Usage.VCPUs, MemoryMB: h.Usage.MemoryMB},
		Capabilities: h.Capabilities, RegisteredAt: h.RegisteredAt, Sandboxes: n, Running: running, Cordoned: h.Cordoned,
	}
	if !h.LastHeartbeat.IsZero() {
		hb := h.LastHeartbeat
		hj.LastHeartbeat = &hb
	}
	return hj, nil
}
