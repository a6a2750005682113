package controlplane

import (
	"cmp"
	"context"
	"crypto/sha256"
	"fmt"
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

// hostTemplate is a template as the hosts that have it report it.
type hostTemplate struct {
	*hostagentv1.Template
	// SizeBytes is the largest size any host reports (hosts that built
	// the template themselves may differ slightly).
	SizeBytes int64
	// Created is the earliest any host reports.
	Created time.Time
	// Hosts are the IDs of the hosts that have it, sorted.
	Hosts []string
}

// collectTemplates is the union of the templates of every host that is
// not down, asked in parallel and sorted by name. A host that does not
// answer is logged and left out: the listing is then partial, not an
// error.
func (s *Server) collectTemplates(ctx context.Context) ([]hostTemplate, error) {
	hosts, err := s.store.ListHosts(ctx)
	if err != nil {
		return nil, err
	}
	answers := make([][]*hostagentv1.Template, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		if h.State == store.HostDown {
			continue
		}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, templatesTimeout)
			defer cancel()
			resp, err := s.agents.For(h).ListTemplates(ctx, connect.NewRequest(&hostagentv1.ListTemplatesRequest{}))
			if err != nil {
				s.log.Warn("host left out of template listing", "host", h.ID, "err", errdefs.FromConnect("agent list templates", err))
				return
			}
			answers[i] = resp.Msg.GetTemplates()
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	byName := map[string]*hostTemplate{}
	for i, ts := range answers {
		for _, t := range ts {
			ht := byName[t.GetName()]
			if ht == nil {
				ht = &hostTemplate{Template: t, Created: t.GetCreated().AsTime()}
				byName[t.GetName()] = ht
			}
			ht.SizeBytes = max(ht.SizeBytes, t.GetSizeBytes())
			if c := t.GetCreated().AsTime(); c.Before(ht.Created) {
				ht.Created = c
			}
			if !slices.Contains(ht.Hosts, hosts[i].ID) {
				ht.Hosts = append(ht.Hosts, hosts[i].ID) // hosts are ordered by ID
			}
		}
	}
	out := make([]hostTemplate, 0, len(byName))
	for _, ht := range byName {
		out = append(out, *ht)
	}
	slices.SortFunc(out, func(a, b hostTemplate) int { return cmp.Compare(a.GetName(), b.GetName()) })
	return out, nil
}

// e2bTemplateJSON is E2B's Template. roost's templates are the hosts',
// shared by every team: public, named by their name, with one build.
type e2bTemplateJSON struct {
	TemplateID    string     `json:"templateID"`
	BuildID       string     `json:"buildID"`
	CPUCount      int32      `json:"cpuCount"`
	MemoryMB      int32      `json:"memoryMB"`
	DiskSizeMB    int32      `json:"diskSizeMB"`
	Public        bool       `json:"public"`
	Aliases       []string   `json:"aliases"`
	Names         []string   `json:"names"`
	CreatedAt     time.Time  `json:"createdAt"`
	UpdatedAt     time.Time  `json:"updatedAt"`
	CreatedBy     *struct{}  `json:"createdBy"`
	LastSpawnedAt *time.Time `json:"lastSpawnedAt"`
	SpawnCount    int64      `json:"spawnCount"`
	BuildCount    int32      `json:"buildCount"`
	EnvdVersion   string     `json:"envdVersion"`
	BuildStatus   string     `json:"buildStatus"`
}

func e2bTemplateView(t hostTemplate) e2bTemplateJSON {
	l := t.GetDefaultLimits()
	return e2bTemplateJSON{
		TemplateID: t.GetName(), BuildID: buildID(t), CPUCount: l.GetVcpus(), MemoryMB: l.GetMemoryMb(), DiskSizeMB: l.GetDiskMb(),
		Public: true, Aliases: []string{t.GetName()}, Names: []string{t.GetName()}, CreatedAt: t.Created, UpdatedAt: t.Created,
		BuildCount: 1, EnvdVersion: t.GetEnvdVersion(), BuildStatus: "ready",
	}
}

// buildID names a template's one build: a UUID derived from its name and
// creation time, the same on every host and every call.
func buildID(t hostTemplate) string {
	h := sha256.Sum256(fmt.Appendf(nil, "%s\x00%d", t.GetName(), t.Created.UnixNano()))
	h[6] = h[6]&0x0f | 0x50 // version 5 layout: name-based
	h[8] = h[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// listE2BTemplates is GET /templates and GET /v2/templates. The teamID
// query, if any, must be the caller's team.
func (s *Server) listE2BTemplates(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	if team := r.URL.Query().Get("teamID"); team != "" && team != key.TeamID {
		s.fail(w, r, "list templates", fmt.Errorf("teamID %q is not the caller's team: %w", team, errdefs.ErrPermissionDenied))
		return
	}
	ts, err := s.collectTemplates(r.Context())
	if err != nil {
		s.fail(w, r, "list templates", err)
		return
	}
	out := make([]e2bTemplateJSON, 0, len(ts))
	for _, t := range ts {
		out = append(out, e2bTemplateView(t))
	}
	writeJSON(w, http.StatusOK, out)
}

// findTemplate is the template named name, on any host that is up.
func (s *Server) findTemplate(ctx context.Context, name string) (hostTemplate, error) {
	ts, err := s.collectTemplates(ctx)
	if err != nil {
		return hostTemplate{}, err
	}
	for _, t := range ts {
		if t.GetName() == name {
			return t, nil
		}
	}
	return hostTemplate{}, fmt.Errorf("template %q not found: %w", name, errdefs.ErrNotFound)
}

// templateBuildJSON is E2B's TemplateBuild.
type templateBuildJSON struct {
	BuildID     string    `json:"buildID"`
	Status      string    `json:"status"`
	CreatedAt   time.Time `json:"createdAt"`
	UpdatedAt   time.Time `json:"updatedAt"`
	FinishedAt  time.Time `json:"finishedAt"`
	CPUCount    int32     `json:"cpuCount"`
	MemoryMB    int32     `json:"memoryMB"`
	DiskSizeMB  int32     `json:"diskSizeMB"`
	EnvdVersion string    `json:"envdVersion"`
}

// getE2BTemplate is GET /templates/{id}: E2B's TemplateWithBuilds, its
// one build.
func (s *Server) getE2BTemplate(w http.ResponseWriter, r *http.Request, _ store.APIKey) {
	t, err := s.findTemplate(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, "get template", err)
		return
	}
	v := e2bTemplateView(t)
	writeJSON(w, http.StatusOK, map[string]any{
		"templateID": v.TemplateID, "public": v.Public, "aliases": v.Aliases, "names": v.Names,
		"createdAt": v.CreatedAt, "updatedAt": v.UpdatedAt, "lastSpawnedAt": nil, "spawnCount": 0,
		"builds": []templateBuildJSON{{
			BuildID: v.BuildID, Status: v.BuildStatus, CreatedAt: v.CreatedAt, UpdatedAt: v.UpdatedAt, FinishedAt: v.CreatedAt,
			CPUCount: v.CPUCount, MemoryMB: v.MemoryMB, DiskSizeMB: v.DiskSizeMB, EnvdVersion: v.EnvdVersion,
		}},
	})
}

// templateByAlias is GET /templates/aliases/{alias}: 200 with the
// template's ID when a template has that name, else 404.
func (s *Server) templateByAlias(w http.ResponseWriter, r *http.Request, _ store.APIKey) {
	alias := r.PathValue("alias")
	if !validTemplate(alias) {
		s.fail(w, r, "template by alias", fmt.Errorf("alias %q: 1-63 characters of [a-zA-Z0-9._-]: %w", alias, errdefs.ErrInvalid))
		return
	}
	t, err := s.findTemplate(r.Context(), alias)
	if err != nil {
		s.fail(w, r, "template by alias", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"templateID": t.GetName(), "public": true})
}
