package controlplane

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"connectrpc.com/connect"

	"roost.dev/roost/errdefs"
	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
	"roost.dev/roost/store"
)

// snapshotTag is the tag a snapshot's build gets, as E2B's do: a
// snapshot's ID is its name with it ("snap:default").
const snapshotTag = "default"

// snapshotRequest is E2B's SandboxSnapshotRequest.
type snapshotRequest struct {
	Name string `json:"name"`
}

// snapshotInfoJSON is E2B's SnapshotInfo.
type snapshotInfoJSON struct {
	SnapshotID string   `json:"snapshotID"`
	Names      []string `json:"names"`
}

func snapshotInfo(t store.Template) snapshotInfoJSON {
	id := t.Name + ":" + snapshotTag
	return snapshotInfoJSON{SnapshotID: id, Names: []string{id}}
}

// snapshotRoutes registers E2B's snapshot routes. A snapshot is deleted
// as the template it is: DELETE /templates/{id}.
func (s *Server) snapshotRoutes(api func(pattern string, h apiHandler)) {
	api("POST /sandboxes/{id}/snapshots", s.createSnapshot)
	api("GET /snapshots", s.listSnapshots)
}

// createSnapshot is POST /sandboxes/{id}/snapshots: the sandbox's
// filesystem as it is now becomes a build of a snapshot template of the
// team (named as asked, or by its ID), a layer over the template it runs
// on, which creates take by the snapshot's ID. A running sandbox runs on.
func (s *Server) createSnapshot(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	var req snapshotRequest
	err := decodeJSON(r.Body, &req)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	if err == nil && req.Name != "" {
		err = checkSnapshotName(req.Name)
	}
	var sb store.Sandbox
	if err == nil {
		sb, err = s.teamSandbox(r, key)
	}
	if err == nil {
		err = usable(sb)
	}
	if err != nil {
		s.fail(w, r, "snapshot sandbox", err)
		return
	}
	// The agent's work and the record must finish even if the client goes.
	ctx, cancel := opContext(context.WithoutCancel(r.Context()))
	defer cancel()
	t, err := s.snapshot(ctx, sb, req.Name)
	if err != nil {
		s.fail(w, r, "snapshot sandbox", err)
		return
	}
	writeJSON(w, http.StatusCreated, snapshotInfo(t))
}

// checkSnapshotName accepts a template name that starts with a letter or
// digit and not with m- (hosts' caches).
func checkSnapshotName(name string) error {
	c := name[0]
	alnum := (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
	if !validTemplate(name) || !alnum || strings.HasPrefix(name, "m-") {
		return fmt.Errorf("snapshot name %q: want 1-63 characters of [a-zA-Z0-9._-], the first a letter or digit, not starting with m- (hosts' caches): %w",
			name, errdefs.ErrInvalid)
	}
	return nil
}

// snapshot has sb's agent make the snapshot and records it.
func (s *Server) snapshot(ctx context.Context, sb store.Sandbox, name string) (store.Template, error) {
	h, err := s.hostOf(ctx, sb)
	if err != nil {
		return store.Template{}, err
	}
	s.unnamedBlobs.RLock()
	defer s.unnamedBlobs.RUnlock()
	resp, err := s.agents.For(h).SnapshotSandbox(ctx, connect.NewRequest(&hostagentv1.SnapshotSandboxRequest{
		SandboxId: sb.ID, EnvVars: sb.EnvVars,
	}))
	if err != nil {
		return store.Template{}, errdefs.FromConnect("agent snapshot sandbox", err)
	}
	d, size, err := s.checkResult(ctx, resp.Msg.GetTemplate())
	if err != nil {
		return store.Template{}, fmt.Errorf("the agent's snapshot: %w", err)
	}
	id := newTemplateID()
	t := store.Template{ID: id, TeamID: sb.TeamID, Name: cmp.Or(name, id), SnapshotOf: sb.ID}
	b := store.TemplateBuild{
		ID: newBuildID(), Manifest: string(d), SizeBytes: size, Tags: []string{snapshotTag},
		CPUs: sb.VCPUs, MemoryMB: sb.MemoryMB, HostID: sb.HostID,
	}
	if t, err = s.store.PutSnapshot(ctx, t, b); err != nil {
		return store.Template{}, err
	}
	s.emit(sb, store.EventCheckpointed, reasonAPI)
	s.log.Info("sandbox snapshot made", "sandbox", sb.ID, "template", t.ID, "name", t.Name, "manifest", d, "size_bytes", size)
	return t, nil
}

// listSnapshots is GET /snapshots: the team's snapshots, newest first,
// filtered by sandboxID (the sandbox a snapshot was taken of) and name
// (a name or ID, as "name", "team/name" or "name:tag"), paged by limit
// and nextToken (the ID the next page starts at).
func (s *Server) listSnapshots(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	q := r.URL.Query()
	limit, err := queryInt(q.Get("limit"), maxListLimit, 1, maxListLimit)
	if err != nil {
		s.fail(w, r, "list snapshots", err)
		return
	}
	all, err := s.store.ListTemplates(r.Context(), key.TeamID)
	if err != nil {
		s.fail(w, r, "list snapshots", err)
		return
	}
	match := s.snapshotFilter(r.Context(), q.Get("sandboxID"), q.Get("name"))
	var snaps []store.Template
	for _, t := range all {
		if t.TeamID == key.TeamID && t.SnapshotOf != "" && match(t) {
			snaps = append(snaps, t)
		}
	}
	slices.SortFunc(snaps, func(a, b store.Template) int {
		return cmp.Or(b.CreatedAt.Compare(a.CreatedAt), strings.Compare(a.ID, b.ID))
	})
	if next := q.Get("nextToken"); next != "" {
		i := slices.IndexFunc(snaps, func(t store.Template) bool { return t.ID == next })
		if i < 0 {
			s.fail(w, r, "list snapshots", fmt.Errorf("nextToken %q: no such snapshot (deleted since?): %w", next, errdefs.ErrInvalid))
			return
		}
		snaps = snaps[i:]
	}
	if len(snaps) > limit {
		w.Header().Set("X-Next-Token", snaps[limit].ID)
		snaps = snaps[:limit]
	}
	out := make([]snapshotInfoJSON, 0, len(snaps))
	for _, t := range snaps {
		out = append(out, snapshotInfo(t))
	}
	writeJSON(w, http.StatusOK, out)
}

// snapshotFilter selects snapshots of sandbox (when set) that name names
// (when set): by name or ID, a "team/" prefix ignored, and with a tag,
// only when the snapshot has it.
func (s *Server) snapshotFilter(ctx context.Context, sandbox, name string) func(store.Template) bool {
	if _, rest, ok := strings.Cut(name, "/"); ok {
		name = rest
	}
	name, tag, _ := strings.Cut(name, ":")
	return func(t store.Template) bool {
		if sandbox != "" && t.SnapshotOf != sandbox {
			return false
		}
		if name != "" && t.Name != name && t.ID != name {
			return false
		}
		if tag != "" {
			if _, err := s.store.TaggedBuild(ctx, t.ID, tag); err != nil {
				return false
			}
		}
		return true
	}
}
