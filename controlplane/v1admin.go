package controlplane

import (
	"cmp"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"

	"roost.dev/roost/errdefs"
	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
	"roost.dev/roost/store"
)

// templatesTimeout bounds one host's answer to ListTemplates: a slow host
// is left out of the listing rather than holding it up.
const templatesTimeout = 10 * time.Second

// templateJSON is one template of GET /v1/templates.
type templateJSON struct {
	Name string `json:"name"`
	// SizeBytes is the largest size any host reports (hosts that built
	// the template themselves may differ slightly).
	SizeBytes int64 `json:"sizeBytes"`
	// Hosts are the IDs of the hosts that have it, sorted.
	Hosts []string `json:"hosts"`
}

// listTemplates is GET /v1/templates: the union of the templates of every
// host that is not down, asked in parallel. A host that does not answer
// is logged and left out; the listing is then partial, not an error.
func (s *Server) listTemplates(w http.ResponseWriter, r *http.Request, _ store.APIKey) {
	hosts, err := s.store.ListHosts(r.Context())
	if err != nil {
		s.fail(w, r, "list templates", err)
		return
	}
	answers := make([][]*hostagentv1.Template, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		if h.State == store.HostDown {
			continue
		}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(r.Context(), templatesTimeout)
			defer cancel()
			resp, err := s.agents.For(h).ListTemplates(ctx, connect.NewRequest(&hostagentv1.ListTemplatesRequest{}))
			if err != nil {
				if r.Context().Err() == nil {
					s.log.Warn("host left out of template listing", "host", h.ID, "err", errdefs.FromConnect("agent list templates", err))
				}
				return
			}
			answers[i] = resp.Msg.GetTemplates()
		})
	}
	wg.Wait()
	if r.Context().Err() != nil {
		return // the client is gone
	}
	byName := map[string]*templateJSON{}
	for i, ts := range answers {
		for _, t := range ts {
			tj := byName[t.GetName()]
			if tj == nil {
				tj = &templateJSON{Name: t.GetName()}
				byName[t.GetName()] = tj
			}
			tj.SizeBytes = max(tj.SizeBytes, t.GetSizeBytes())
			if !slices.Contains(tj.Hosts, hosts[i].ID) {
				tj.Hosts = append(tj.Hosts, hosts[i].ID) // hosts are ordered by ID
			}
		}
	}
	out := make([]templateJSON, 0, len(byName))
	for _, tj := range byName {
		out = append(out, *tj)
	}
	slices.SortFunc(out, func(a, b templateJSON) int { return cmp.Compare(a.Name, b.Name) })
	writeJSON(w, http.StatusOK, out)
}

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
		n, err := s.activeSandboxes(ctx, h.ID)
		if err != nil {
			s.fail(w, r, "list hosts", err)
			return
		}
		hj := hostJSON{
			ID: h.ID, Name: h.Name, URL: h.URL, State: string(h.State), Runtime: h.Runtime,
			Capacity:     hostCapacity{CPUs: h.CPUs, MemoryMB: h.MemoryMB, MaxSandboxes: h.MaxSandboxes},
			Usage:        hostUsage{Sandboxes: h.Usage.Sandboxes, VCPUs: h.Usage.VCPUs, MemoryMB: h.Usage.MemoryMB},
			Capabilities: h.Capabilities, RegisteredAt: h.RegisteredAt, Sandboxes: n,
		}
		if !h.LastHeartbeat.IsZero() {
			hb := h.LastHeartbeat
			hj.LastHeartbeat = &hb
		}
		out = append(out, hj)
	}
	writeJSON(w, http.StatusOK, out)
}
