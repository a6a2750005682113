package controlplane

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"roost.dev/roost/errdefs"
	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
	"roost.dev/roost/store"
	"roost.dev/roost/template/content"
)

// Templates come from two places. Content templates live in the store
// (a team's, public or not, with builds whose manifests are blobs in
// Config.Blobs); hosts' own trees (base, trees imported by hand) are
// shared by every team and found by asking the hosts. A name resolves to
// a content template the team may use first, then to a host's tree.

// templatesTimeout bounds one host's answer to ListTemplates: a slow host
// is left out of the listing rather than holding it up.
const templatesTimeout = 10 * time.Second

// defaultTag is the tag a build gets, and a name without a tag means.
const defaultTag = "default"

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
	// Progress says, for each host still making the tree (a pull, the
	// build of base), what it is doing: "HOST: pulling 1.0 of 2.0 MiB".
	Progress []string
}

// building reports whether no host has the tree yet, only hosts making it.
func (t hostTemplate) building() bool { return len(t.Hosts) == 0 && len(t.Progress) > 0 }

// cacheTree reports whether a host's template is a tree made from the
// control plane's content ("m-" and a manifest's digest): a cache, listed
// under its content template, never by itself.
func cacheTree(t *hostagentv1.Template) bool {
	return t.GetDigest() != "" || strings.HasPrefix(t.GetName(), "m-")
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
	answers := make([]*hostagentv1.ListTemplatesResponse, len(hosts))
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
			answers[i] = resp.Msg
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	byName := map[string]*hostTemplate{}
	entry := func(t *hostagentv1.Template) *hostTemplate {
		ht := byName[t.GetName()]
		if ht == nil {
			ht = &hostTemplate{Template: t, Created: t.GetCreated().AsTime()}
			byName[t.GetName()] = ht
		}
		return ht
	}
	for i, a := range answers {
		for _, p := range a.GetInProgress() {
			ht := entry(&hostagentv1.Template{Name: p.GetName(), Digest: p.GetDigest()})
			ht.Progress = append(ht.Progress, hosts[i].ID+": "+p.GetProgress())
		}
		for _, t := range a.GetTemplates() {
			ht := entry(t)
			if len(ht.Hosts) == 0 {
				// The first host that has it built: its record, not the
				// placeholder of a host still making it.
				ht.Template, ht.Created = t, t.GetCreated().AsTime()
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

// hostsHolding maps a manifest digest to the hosts whose tree of it
// exists.
func hostsHolding(ts []hostTemplate) map[string][]string {
	out := map[string][]string{}
	for _, t := range ts {
		if d := t.GetDigest(); d != "" {
			out[d] = append(out[d], t.Hosts...)
		}
	}
	for d, hs := range out {
		slices.Sort(hs)
		out[d] = slices.Compact(hs)
	}
	return out
}

// progressOf maps a manifest digest to what the hosts pulling it are
// doing.
func progressOf(ts []hostTemplate) map[string][]string {
	out := map[string][]string{}
	for _, t := range ts {
		if d := t.GetDigest(); d != "" && len(t.Progress) > 0 {
			out[d] = append(out[d], t.Progress...)
		}
	}
	return out
}

// splitTemplateRef splits "name[:tag]"; both parts must be names.
func splitTemplateRef(ref string) (name, tag string, err error) {
	name, tag, hasTag := strings.Cut(ref, ":")
	if !validTemplate(name) || (hasTag && !validTemplate(tag)) {
		return "", "", fmt.Errorf("template %q: want a name or name:tag, each 1-63 characters of [a-zA-Z0-9._-]: %w", ref, errdefs.ErrInvalid)
	}
	return name, tag, nil
}

// visibleTemplate is the content template of that ID or name the team may
// use: its own or a public one. Another team's private template is not
// found.
func (s *Server) visibleTemplate(ctx context.Context, teamID, idOrName string) (store.Template, error) {
	t, err := s.store.GetTemplate(ctx, idOrName)
	if err == nil && (t.TeamID == teamID || t.Public) {
		return t, nil
	}
	if err == nil || errors.Is(err, errdefs.ErrNotFound) {
		return store.Template{}, fmt.Errorf("template %q not found: %w", idOrName, errdefs.ErrNotFound)
	}
	return store.Template{}, err
}

// ownTemplate is the team's own content template of that ID or name: a
// public template of another team is errdefs.ErrPermissionDenied (403,
// as E2B), a private one not found.
func (s *Server) ownTemplate(ctx context.Context, teamID, idOrName string) (store.Template, error) {
	t, err := s.visibleTemplate(ctx, teamID, idOrName)
	if err != nil {
		return store.Template{}, err
	}
	if t.TeamID != teamID {
		return store.Template{}, fmt.Errorf("template %q belongs to another team: %w", idOrName, errdefs.ErrPermissionDenied)
	}
	return t, nil
}

// ownTaggedTemplate is ownTemplate of "id" or "id:tag"; with a tag the
// template lacks, it is not found.
func (s *Server) ownTaggedTemplate(ctx context.Context, teamID, ref string) (store.Template, error) {
	idOrName, tag, hasTag := strings.Cut(ref, ":")
	t, err := s.ownTemplate(ctx, teamID, idOrName)
	if err != nil || !hasTag {
		return t, err
	}
	if _, err := s.store.TaggedBuild(ctx, t.ID, tag); err != nil {
		return store.Template{}, fmt.Errorf("template %q: %w", ref, err)
	}
	return t, nil
}

// e2bTemplateJSON is E2B's Template.
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

// hostTemplateView shows a host's tree: public, named by its name, with
// one build.
func hostTemplateView(t hostTemplate) e2bTemplateJSON {
	l := t.GetDefaultLimits()
	return e2bTemplateJSON{
		TemplateID: t.GetName(), BuildID: buildID(t), CPUCount: l.GetVcpus(), MemoryMB: l.GetMemoryMb(), DiskSizeMB: l.GetDiskMb(),
		Public: true, Aliases: []string{t.GetName()}, Names: []string{t.GetName()}, CreatedAt: t.Created, UpdatedAt: t.Created,
		BuildCount: 1, EnvdVersion: t.GetEnvdVersion(), BuildStatus: hostTreeStatus(t),
	}
}

// hostTreeStatus is a host tree's build status: building while no host
// has it yet but one is making it (base at a host's first start).
func hostTreeStatus(t hostTemplate) string {
	if t.building() {
		return string(store.BuildBuilding)
	}
	return string(store.BuildReady)
}

// buildID names a host tree's one build: a UUID derived from its name and
// creation time, the same on every host and every call.
func buildID(t hostTemplate) string {
	h := sha256.Sum256(fmt.Appendf(nil, "%s\x00%d", t.GetName(), t.Created.UnixNano()))
	h[6] = h[6]&0x0f | 0x50 // version 5 layout: name-based
	h[8] = h[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// contentTemplate is a content template with its builds, newest first,
// and the build its default tag points at (nil when none is ready).
type contentTemplate struct {
	store.Template
	Builds  []store.TemplateBuild
	Current *store.TemplateBuild
	Tags    []store.TemplateTag
}

func (s *Server) loadContentTemplate(ctx context.Context, t store.Template) (contentTemplate, error) {
	builds, err := s.store.ListBuilds(ctx, t.ID)
	if err != nil {
		return contentTemplate{}, err
	}
	tags, err := s.store.Tags(ctx, t.ID)
	if err != nil {
		return contentTemplate{}, err
	}
	ct := contentTemplate{Template: t, Builds: builds, Tags: tags}
	for _, tag := range tags {
		if tag.Tag != defaultTag {
			continue
		}
		for i := range builds {
			if builds[i].ID == tag.BuildID {
				ct.Current = &builds[i]
			}
		}
	}
	return ct, nil
}

// shown is the build a listing shows: the current one, else the latest.
func (ct contentTemplate) shown() store.TemplateBuild {
	if ct.Current != nil {
		return *ct.Current
	}
	if len(ct.Builds) > 0 {
		return ct.Builds[0]
	}
	return store.TemplateBuild{}
}

func contentTemplateView(ct contentTemplate) e2bTemplateJSON {
	b := ct.shown()
	status := string(b.Status)
	if len(ct.Builds) > 0 {
		status = string(ct.Builds[0].Status) // the latest build's
	}
	return e2bTemplateJSON{
		TemplateID: ct.ID, BuildID: b.ID, CPUCount: int32(b.CPUs), MemoryMB: int32(b.MemoryMB), Public: ct.Public,
		Aliases: []string{ct.Name}, Names: []string{ct.Name}, CreatedAt: ct.CreatedAt, UpdatedAt: ct.UpdatedAt,
		BuildCount: int32(len(ct.Builds)), EnvdVersion: envdVersion, BuildStatus: status,
	}
}

// teamTemplates is what the team sees: its content templates and the
// public ones, then the hosts' own trees that no content template's name
// shadows, caches left out.
func (s *Server) teamTemplates(ctx context.Context, teamID string) ([]contentTemplate, []hostTemplate, error) {
	ts, err := s.store.ListTemplates(ctx, teamID)
	if err != nil {
		return nil, nil, err
	}
	cts := make([]contentTemplate, 0, len(ts))
	for _, t := range ts {
		ct, err := s.loadContentTemplate(ctx, t)
		if err != nil {
			return nil, nil, err
		}
		cts = append(cts, ct)
	}
	hts, err := s.collectTemplates(ctx)
	if err != nil {
		return nil, nil, err
	}
	return cts, hts, nil
}

// ownTrees keeps the hosts' own trees that a listing shows.
func ownTrees(hts []hostTemplate, cts []contentTemplate) []hostTemplate {
	var out []hostTemplate
	for _, t := range hts {
		shadowed := slices.ContainsFunc(cts, func(ct contentTemplate) bool { return ct.Name == t.GetName() })
		if !cacheTree(t.Template) && !shadowed {
			out = append(out, t)
		}
	}
	return out
}

// listE2BTemplates is GET /templates and GET /v2/templates. The teamID
// query, if any, must be the caller's team.
func (s *Server) listE2BTemplates(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	if team := r.URL.Query().Get("teamID"); team != "" && team != key.TeamID {
		s.fail(w, r, "list templates", fmt.Errorf("teamID %q is not the caller's team: %w", team, errdefs.ErrPermissionDenied))
		return
	}
	cts, hts, err := s.teamTemplates(r.Context(), key.TeamID)
	if err != nil {
		s.fail(w, r, "list templates", err)
		return
	}
	out := make([]e2bTemplateJSON, 0, len(cts)+len(hts))
	for _, ct := range cts {
		out = append(out, contentTemplateView(ct))
	}
	for _, t := range ownTrees(hts, cts) {
		out = append(out, hostTemplateView(t))
	}
	writeJSON(w, http.StatusOK, out)
}

// findHostTemplate is the host tree named name, on any host that is up.
func (s *Server) findHostTemplate(ctx context.Context, name string) (hostTemplate, error) {
	ts, err := s.collectTemplates(ctx)
	if err != nil {
		return hostTemplate{}, err
	}
	for _, t := range ts {
		if t.GetName() == name && !cacheTree(t.Template) && !t.building() {
			return t, nil
		}
	}
	return hostTemplate{}, fmt.Errorf("template %q not found: %w", name, errdefs.ErrNotFound)
}

// templateBuildJSON is E2B's TemplateBuild.
type templateBuildJSON struct {
	BuildID     string     `json:"buildID"`
	Status      string     `json:"status"`
	CreatedAt   time.Time  `json:"createdAt"`
	UpdatedAt   time.Time  `json:"updatedAt"`
	FinishedAt  *time.Time `json:"finishedAt,omitempty"`
	CPUCount    int32      `json:"cpuCount"`
	MemoryMB    int32      `json:"memoryMB"`
	DiskSizeMB  int32      `json:"diskSizeMB,omitempty"`
	EnvdVersion string     `json:"envdVersion"`
}

// templateWithBuildsJSON is E2B's TemplateWithBuilds.
type templateWithBuildsJSON struct {
	TemplateID    string              `json:"templateID"`
	Public        bool                `json:"public"`
	Aliases       []string            `json:"aliases"`
	Names         []string            `json:"names"`
	CreatedAt     time.Time           `json:"createdAt"`
	UpdatedAt     time.Time           `json:"updatedAt"`
	LastSpawnedAt *time.Time          `json:"lastSpawnedAt"`
	SpawnCount    int64               `json:"spawnCount"`
	Builds        []templateBuildJSON `json:"builds"`
}

func buildView(b store.TemplateBuild) templateBuildJSON {
	v := templateBuildJSON{
		BuildID: b.ID, Status: string(b.Status), CreatedAt: b.CreatedAt, UpdatedAt: b.UpdatedAt,
		CPUCount: int32(b.CPUs), MemoryMB: int32(b.MemoryMB), EnvdVersion: envdVersion,
	}
	if !b.FinishedAt.IsZero() {
		v.FinishedAt = &b.FinishedAt
	}
	return v
}

// getE2BTemplate is GET /templates/{id}: E2B's TemplateWithBuilds, of a
// content template the team may use or else of a host's tree.
func (s *Server) getE2BTemplate(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	ctx := r.Context()
	t, err := s.visibleTemplate(ctx, key.TeamID, r.PathValue("id"))
	if err == nil {
		ct, err := s.loadContentTemplate(ctx, t)
		if err != nil {
			s.fail(w, r, "get template", err)
			return
		}
		out := templateWithBuildsJSON{
			TemplateID: t.ID, Public: t.Public, Aliases: []string{t.Name}, Names: []string{t.Name},
			CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt, Builds: make([]templateBuildJSON, 0, len(ct.Builds)),
		}
		for _, b := range ct.Builds {
			out.Builds = append(out.Builds, buildView(b))
		}
		writeJSON(w, http.StatusOK, out)
		return
	}
	if !errors.Is(err, errdefs.ErrNotFound) {
		s.fail(w, r, "get template", err)
		return
	}
	ht, err := s.findHostTemplate(ctx, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, "get template", err)
		return
	}
	v := hostTemplateView(ht)
	writeJSON(w, http.StatusOK, templateWithBuildsJSON{
		TemplateID: v.TemplateID, Public: v.Public, Aliases: v.Aliases, Names: v.Names, CreatedAt: v.CreatedAt, UpdatedAt: v.UpdatedAt,
		Builds: []templateBuildJSON{{
			BuildID: v.BuildID, Status: v.BuildStatus, CreatedAt: v.CreatedAt, UpdatedAt: v.UpdatedAt, FinishedAt: &v.CreatedAt,
			CPUCount: v.CPUCount, MemoryMB: v.MemoryMB, DiskSizeMB: v.DiskSizeMB, EnvdVersion: v.EnvdVersion,
		}},
	})
}

// templateByAlias is GET /templates/aliases/{alias}: 200 with the
// template's ID when the team may use a template of that name, 403 when
// it is another team's (as E2B answers), else 404.
func (s *Server) templateByAlias(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	alias := r.PathValue("alias")
	if !validTemplate(alias) {
		s.fail(w, r, "template by alias", fmt.Errorf("alias %q: 1-63 characters of [a-zA-Z0-9._-]: %w", alias, errdefs.ErrInvalid))
		return
	}
	t, err := s.store.GetTemplate(r.Context(), alias)
	switch {
	case err == nil && t.Name == alias && (t.TeamID == key.TeamID || t.Public):
		writeJSON(w, http.StatusOK, map[string]any{"templateID": t.ID, "public": t.Public})
		return
	case err == nil && t.Name == alias:
		s.fail(w, r, "template by alias", fmt.Errorf("template %q belongs to another team: %w", alias, errdefs.ErrPermissionDenied))
		return
	case err != nil && !errors.Is(err, errdefs.ErrNotFound):
		s.fail(w, r, "template by alias", err)
		return
	}
	ht, err := s.findHostTemplate(r.Context(), alias)
	if err != nil {
		s.fail(w, r, "template by alias", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"templateID": ht.GetName(), "public": true})
}

// updateTemplateRequest is E2B's TemplateUpdateRequest.
type updateTemplateRequest struct {
	Public *bool `json:"public"`
}

// updateTemplate is PATCH /templates/{id} (200, no body) and PATCH
// /v2/templates/{id} (E2B's TemplateUpdateResponse).
func (s *Server) updateTemplate(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	var req updateTemplateRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		s.fail(w, r, "update template", err)
		return
	}
	t, err := s.ownTemplate(r.Context(), key.TeamID, r.PathValue("id"))
	if err == nil && req.Public != nil {
		t, err = s.store.SetTemplatePublic(r.Context(), t.ID, *req.Public)
	}
	if err != nil {
		s.fail(w, r, "update template", err)
		return
	}
	if strings.HasPrefix(r.URL.Path, "/v2/") {
		writeJSON(w, http.StatusOK, map[string]any{"names": []string{t.Name}})
		return
	}
	w.WriteHeader(http.StatusOK)
}

// deleteTemplate is DELETE /templates/{id}: the template, its builds,
// tags and files go; then the blobs that only they named. A template that
// sandboxes still run keeps its blobs (their hosts keep the trees). The
// ID may carry a tag the template has, as a snapshot's ID does
// ("snap:default", E2B's Sandbox.deleteSnapshot): the whole template goes.
func (s *Server) deleteTemplate(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	ctx := r.Context()
	t, err := s.ownTaggedTemplate(ctx, key.TeamID, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, "delete template", err)
		return
	}
	blobs, err := s.contentStore()
	if err != nil {
		s.fail(w, r, "delete template", err)
		return
	}
	builds, files, err := s.store.DeleteTemplate(ctx, t.ID)
	if err != nil {
		s.fail(w, r, "delete template", err)
		return
	}
	s.log.Info("template deleted", "template", t.ID, "name", t.Name, "builds", len(builds))
	gcCtx, cancel := opContext(ctx)
	defer cancel()
	running, err := s.store.CountSandboxes(gcCtx, store.SandboxFilter{Template: t.ID, States: activeStates})
	switch {
	case err != nil:
		s.log.Warn("template blobs kept: sandboxes of the template not counted", "template", t.ID, "err", err)
	case running > 0:
		s.log.Info("template blobs kept: sandboxes of the template run", "template", t.ID, "sandboxes", running)
	default:
		s.collectGarbage(gcCtx, blobs, blobsOf(blobs, builds, files))
	}
	w.WriteHeader(http.StatusNoContent)
}

// v1TemplateJSON is one template of GET /v1/templates: a content template
// (its current build) or a host's own tree.
type v1TemplateJSON struct {
	TemplateID string    `json:"templateID"`
	Name       string    `json:"name"`
	Names      []string  `json:"names"`
	Tags       []string  `json:"tags"`
	Public     bool      `json:"public"`
	BuildID    string    `json:"buildID"`
	Status     string    `json:"status"`
	Digest     string    `json:"digest,omitempty"`
	SizeBytes  int64     `json:"sizeBytes"`
	Hosts      []string  `json:"hosts"`
	Source     string    `json:"source"`
	CreatedAt  time.Time `json:"createdAt"`
	UpdatedAt  time.Time `json:"updatedAt"`
	// Progress says what the hosts still making the template's tree are
	// doing ("HOST: pulling 1.0 of 2.0 MiB (…)", a base build's stage).
	Progress string `json:"progress,omitempty"`
}

// listTemplates is GET /v1/templates: the team's content templates and
// the public ones, with the hosts that hold each one's current tree, and
// the hosts' own trees.
func (s *Server) listTemplates(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	cts, hts, err := s.teamTemplates(r.Context(), key.TeamID)
	if err != nil {
		s.fail(w, r, "list templates", err)
		return
	}
	holding, pulling := hostsHolding(hts), progressOf(hts)
	out := make([]v1TemplateJSON, 0, len(cts)+len(hts))
	for _, ct := range cts {
		v := s.v1ContentView(ct, holding)
		v.Progress = strings.Join(pulling[v.Digest], "; ")
		out = append(out, v)
	}
	for _, t := range ownTrees(hts, cts) {
		hosts := t.Hosts
		if hosts == nil {
			hosts = []string{}
		}
		out = append(out, v1TemplateJSON{
			TemplateID: t.GetName(), Name: t.GetName(), Names: []string{t.GetName()}, Tags: []string{}, Public: true,
			BuildID: buildID(t), Status: hostTreeStatus(t), SizeBytes: t.SizeBytes, Hosts: hosts,
			Source: t.GetSource(), CreatedAt: t.Created, UpdatedAt: t.Created, Progress: strings.Join(t.Progress, "; "),
		})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) v1ContentView(ct contentTemplate, holding map[string][]string) v1TemplateJSON {
	b := ct.shown()
	v := v1TemplateJSON{
		TemplateID: ct.ID, Name: ct.Name, Names: []string{ct.Name}, Tags: []string{}, Public: ct.Public, BuildID: b.ID,
		Status: string(b.Status), Digest: b.Manifest, SizeBytes: b.SizeBytes, Hosts: holding[b.Manifest],
		CreatedAt: ct.CreatedAt, UpdatedAt: ct.UpdatedAt,
	}
	if v.Hosts == nil {
		v.Hosts = []string{}
	}
	for _, tag := range ct.Tags {
		if tag.BuildID == b.ID {
			v.Tags = append(v.Tags, tag.Tag)
		}
	}
	if b.Manifest != "" && s.cfg.Blobs != nil {
		if m, err := s.cfg.Blobs.Manifest(content.Digest(b.Manifest)); err == nil {
			v.Source = m.Config.Source
		}
	}
	return v
}
