package controlplane

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/store"
	"roost.dev/roost/template/build"
	"roost.dev/roost/template/content"
)

// A build goes: POST /v3/templates makes the template (or finds the
// team's of that name) and a build in waiting; the client uploads its
// files; a trigger (E2B's POST /v2/templates/{id}/builds/{buildID}, or
// roost's POST /v1/... with a build.Spec) turns the request into a Spec
// and starts the build on a host (buildrunner.go); the client polls the
// status, with the log, until ready or error.

// maxSpecBytes bounds a build request's body.
const maxSpecBytes = 4 << 20

// createTemplateRequest is E2B's TemplateBuildRequestV3.
type createTemplateRequest struct {
	Name     string   `json:"name"`
	Alias    string   `json:"alias"` // deprecated: name
	Tags     []string `json:"tags"`
	TeamID   string   `json:"teamID"`
	CPUCount int64    `json:"cpuCount"`
	MemoryMB int64    `json:"memoryMB"`
}

// createTemplateJSON is E2B's TemplateRequestResponseV3.
type createTemplateJSON struct {
	TemplateID string   `json:"templateID"`
	BuildID    string   `json:"buildID"`
	Public     bool     `json:"public"`
	Names      []string `json:"names"`
	Tags       []string `json:"tags"`
	Aliases    []string `json:"aliases"`
}

// Sizes a template's sandboxes default to when its build names none.
const (
	defaultBuildCPUs     = 2
	defaultBuildMemoryMB = 512
)

// parseCreateTemplate validates a v3 body: the name, its tags ("name:tag"
// adds one; "default" when none) and sizes.
func parseCreateTemplate(req createTemplateRequest) (name string, tags []string, err error) {
	ref := cmp.Or(req.Name, req.Alias)
	if ref == "" {
		return "", nil, fmt.Errorf("name is required: %w", errdefs.ErrInvalid)
	}
	name, tag, err := splitTemplateRef(ref)
	if err != nil {
		return "", nil, err
	}
	if strings.HasPrefix(name, "m-") {
		return "", nil, fmt.Errorf("template name %q: names starting with m- are reserved for hosts' caches: %w", name, errdefs.ErrInvalid)
	}
	if tag != "" {
		tags = append(tags, tag)
	}
	for _, t := range req.Tags {
		if !validTemplate(t) {
			return "", nil, fmt.Errorf("tag %q: 1-63 characters of [a-zA-Z0-9._-]: %w", t, errdefs.ErrInvalid)
		}
		tags = append(tags, t)
	}
	if len(tags) == 0 {
		tags = []string{defaultTag}
	}
	if req.CPUCount < 0 || req.CPUCount > maxVCPUs || req.MemoryMB < 0 || req.MemoryMB > maxMemoryMB {
		return "", nil, fmt.Errorf("cpuCount %d, memoryMB %d: want 0 (default) to %d and %d: %w", req.CPUCount, req.MemoryMB, maxVCPUs, maxMemoryMB, errdefs.ErrInvalid)
	}
	return name, tags, nil
}

// createTemplate is POST /v3/templates: 202 with the template (new, or the
// team's of that name) and a new build in waiting.
func (s *Server) createTemplate(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	var req createTemplateRequest
	err := decodeJSON(r.Body, &req)
	if errors.Is(err, io.EOF) {
		err = fmt.Errorf("empty body: %w", errdefs.ErrInvalid)
	}
	var name string
	var tags []string
	if err == nil {
		name, tags, err = parseCreateTemplate(req)
	}
	if err == nil && req.TeamID != "" && req.TeamID != key.TeamID {
		err = fmt.Errorf("teamID %q is not the caller's team: %w", req.TeamID, errdefs.ErrPermissionDenied)
	}
	var t store.Template
	if err == nil {
		t, err = s.teamTemplateNamed(r.Context(), key.TeamID, name)
	}
	if err != nil {
		s.fail(w, r, "create template", err)
		return
	}
	b := store.TemplateBuild{
		ID: newBuildID(), TemplateID: t.ID, Status: store.BuildWaiting, Tags: tags,
		CPUs: int(orDefault(req.CPUCount, defaultBuildCPUs)), MemoryMB: orDefault(req.MemoryMB, defaultBuildMemoryMB),
	}
	if err := s.store.CreateBuild(r.Context(), b); err != nil {
		s.fail(w, r, "create template", err)
		return
	}
	s.log.Info("template build requested", "template", t.ID, "name", t.Name, "build", b.ID, "tags", tags)
	writeJSON(w, http.StatusAccepted, createTemplateJSON{
		TemplateID: t.ID, BuildID: b.ID, Public: t.Public, Names: []string{t.Name}, Tags: tags, Aliases: []string{t.Name},
	})
}

// orDefault is v, or def when v is zero.
func orDefault(v, def int64) int64 {
	if v == 0 {
		return def
	}
	return v
}

// teamTemplateNamed is the team's template of that name, made when there
// is none; another team's is errdefs.ErrConflict (names are global).
func (s *Server) teamTemplateNamed(ctx context.Context, teamID, name string) (store.Template, error) {
	for range 2 { // a create racing ours wins; then it is found
		t, err := s.store.GetTemplate(ctx, name)
		switch {
		case err == nil && t.Name == name && t.TeamID == teamID:
			return t, nil
		case err == nil && t.Name == name:
			return store.Template{}, fmt.Errorf("template name %q is taken by another team: %w", name, errdefs.ErrConflict)
		case err != nil && !errors.Is(err, errdefs.ErrNotFound):
			return store.Template{}, err
		}
		t = store.Template{ID: newTemplateID(), TeamID: teamID, Name: name}
		err = s.store.CreateTemplate(ctx, t)
		if err == nil {
			return s.store.GetTemplate(ctx, t.ID)
		}
		if !errors.Is(err, errdefs.ErrConflict) {
			return store.Template{}, err
		}
	}
	return store.Template{}, fmt.Errorf("template %q: created and deleted concurrently, try again: %w", name, errdefs.ErrConflict)
}

// newTemplateID is 20 characters of [a-z2-7], as E2B's IDs are of [a-z0-9].
func newTemplateID() string { return randomString(13)[:20] }

// newBuildID is a random (version 4) UUID.
func newBuildID() string {
	b := []byte(randomHex(16))
	b[12] = '4'
	b[16] = "89ab"[b[16]%4]
	return fmt.Sprintf("%s-%s-%s-%s-%s", b[0:8], b[8:12], b[12:16], b[16:20], b[20:32])
}

// startE2BBuild is POST /v2/templates/{id}/builds/{buildID}: E2B's
// TemplateBuildStartV2 becomes a Spec and the build starts.
func (s *Server) startE2BBuild(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	s.startBuild(w, r, key, func(ctx context.Context, body []byte) (build.Spec, error) {
		return build.FromE2B(body, s.teamFiles(ctx, key.TeamID))
	})
}

// startSpecBuild is POST /v1/templates/{id}/builds/{buildID}: roost's own
// trigger, whose body is a build.Spec. Files and archives it names are
// digests of what the team uploaded ("sha256:" and the files' hash).
func (s *Server) startSpecBuild(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	s.startBuild(w, r, key, func(ctx context.Context, body []byte) (build.Spec, error) {
		var spec build.Spec
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&spec); err != nil {
			return build.Spec{}, fmt.Errorf("build spec: %v: %w", err, errdefs.ErrInvalid)
		}
		if err := s.uploadedInputs(ctx, key.TeamID, &spec); err != nil {
			return build.Spec{}, err
		}
		return spec, spec.Validate()
	})
}

// uploadedInputs checks that every blob spec takes from the client is one
// the team uploaded, and that it names no manifest itself (the control
// plane resolves templates, so a team cannot build on another's content).
func (s *Server) uploadedInputs(ctx context.Context, teamID string, spec *build.Spec) error {
	files := s.teamFiles(ctx, teamID)
	resolve := func(d *content.Digest) error {
		if *d == "" {
			return nil
		}
		if _, err := content.ParseDigest(string(*d)); err != nil {
			return err
		}
		got, err := files(d.Hex())
		if err != nil {
			return err
		}
		*d = got
		return nil
	}
	for i := range spec.Stages {
		st := &spec.Stages[i]
		if st.From.Manifest != "" {
			return fmt.Errorf("stage %d: from.manifest is the control plane's to set: name the template: %w", i, errdefs.ErrInvalid)
		}
		if err := resolve(&st.From.Archive); err != nil {
			return fmt.Errorf("stage %d archive: %w", i, err)
		}
		for j := range st.Steps {
			if err := resolve(&st.Steps[j].Files); err != nil {
				return fmt.Errorf("stage %d step %d: %w", i, j+1, err)
			}
		}
	}
	return nil
}

// startBuild reads the trigger's body, makes the Spec with toSpec,
// resolves the templates it starts from and starts the build: 202.
func (s *Server) startBuild(w http.ResponseWriter, r *http.Request, key store.APIKey,
	toSpec func(ctx context.Context, body []byte) (build.Spec, error)) {
	ctx := r.Context()
	t, err := s.ownTemplate(ctx, key.TeamID, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, "start build", err)
		return
	}
	if _, err := s.contentStore(); err != nil {
		s.fail(w, r, "start build", err)
		return
	}
	b, err := s.store.GetBuild(ctx, t.ID, r.PathValue("buildID"))
	if err == nil && b.Status != store.BuildWaiting {
		err = fmt.Errorf("build %s is %s: a build starts once: %w", b.ID, b.Status, errdefs.ErrConflict)
	}
	var body []byte
	if err == nil {
		body, err = readBody(r.Body, maxSpecBytes)
	}
	var spec build.Spec
	if err == nil {
		spec, err = toSpec(ctx, body)
	}
	if err == nil {
		err = s.resolveBases(ctx, key.TeamID, &spec)
	}
	if err == nil {
		err = s.launchBuild(ctx, t, b, spec)
	}
	if err != nil {
		s.fail(w, r, "start build", err)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

// readBody reads at most max bytes of a body (ErrInvalid beyond).
func readBody(body io.Reader, max int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(body, max+1))
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("body larger than %d bytes: %w", max, errdefs.ErrInvalid)
	}
	return b, nil
}

// resolveBases gives every stage that starts from a content template the
// team may use the manifest of its tag's build ("name:tag", default
// "default"). A name the store does not know stays a host's own tree.
func (s *Server) resolveBases(ctx context.Context, teamID string, spec *build.Spec) error {
	for i := range spec.Stages {
		from := &spec.Stages[i].From
		if from.Template == "" {
			continue
		}
		c, err := s.resolveContent(ctx, teamID, from.Template)
		if errors.Is(err, errNotContent) {
			continue
		}
		if err != nil {
			return fmt.Errorf("stage %d from: %w", i, err)
		}
		from.Manifest = c.Digest
	}
	return nil
}

// buildInfoJSON is E2B's TemplateBuildInfo.
type buildInfoJSON struct {
	TemplateID string                `json:"templateID"`
	BuildID    string                `json:"buildID"`
	Status     string                `json:"status"`
	Logs       []string              `json:"logs"`
	LogEntries []store.BuildLogEntry `json:"logEntries"`
	Reason     *store.BuildReason    `json:"reason,omitempty"`
}

// maxLogPage bounds the entries of one status or logs answer, as E2B.
const maxLogPage = 100

// teamBuild is the path's build of the team's own template.
func (s *Server) teamBuild(r *http.Request, key store.APIKey) (store.Template, store.TemplateBuild, error) {
	t, err := s.ownTemplate(r.Context(), key.TeamID, r.PathValue("id"))
	if err != nil {
		return store.Template{}, store.TemplateBuild{}, err
	}
	b, err := s.store.GetBuild(r.Context(), t.ID, r.PathValue("buildID"))
	return t, b, err
}

// buildStatus is GET /templates/{id}/builds/{buildID}/status
// ?logsOffset=&limit=&level=: E2B's TemplateBuildInfo with the log
// entries from logsOffset on.
func (s *Server) buildStatus(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	q := r.URL.Query()
	offset, err1 := queryInt(q.Get("logsOffset"), 0, 0, 1<<31-1)
	limit, err2 := queryInt(q.Get("limit"), maxLogPage, 0, maxLogPage)
	if err := errors.Join(err1, err2); err != nil {
		s.fail(w, r, "build status", err)
		return
	}
	t, b, err := s.teamBuild(r, key)
	var entries []store.BuildLogEntry
	if err == nil && limit > 0 {
		entries, err = s.store.BuildLog(r.Context(), b.ID, store.BuildLogFilter{MinLevel: q.Get("level"), Offset: offset, Limit: limit})
	}
	if err != nil {
		s.fail(w, r, "build status", err)
		return
	}
	out := buildInfoJSON{TemplateID: t.ID, BuildID: b.ID, Status: string(b.Status), Logs: make([]string, 0, len(entries)),
		LogEntries: entries, Reason: b.Reason}
	if out.LogEntries == nil {
		out.LogEntries = []store.BuildLogEntry{}
	}
	for _, e := range entries {
		out.Logs = append(out.Logs, e.Message)
	}
	writeJSON(w, http.StatusOK, out)
}

// buildLogs is GET /templates/{id}/builds/{buildID}/logs
// ?cursor=&limit=&direction=&level=: E2B's TemplateBuildLogsResponse.
// The cursor is a time in milliseconds.
func (s *Server) buildLogs(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	q := r.URL.Query()
	limit, err := queryInt(q.Get("limit"), maxLogPage, 0, maxLogPage)
	f := store.BuildLogFilter{MinLevel: q.Get("level"), Limit: limit}
	if err == nil {
		f.Cursor, err = parseCursor(q.Get("cursor"))
	}
	switch d := q.Get("direction"); d {
	case "", "forward":
	case "backward":
		f.Backward = true
	default:
		err = errors.Join(err, fmt.Errorf("direction %q: want forward or backward: %w", d, errdefs.ErrInvalid))
	}
	var b store.TemplateBuild
	if err == nil {
		_, b, err = s.teamBuild(r, key)
	}
	var entries []store.BuildLogEntry
	if err == nil && limit > 0 {
		entries, err = s.store.BuildLog(r.Context(), b.ID, f)
	}
	if err != nil {
		s.fail(w, r, "build logs", err)
		return
	}
	if entries == nil {
		entries = []store.BuildLogEntry{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"logs": entries})
}

// queryInt parses an integer query parameter within [min, max]; empty is
// def.
func queryInt(v string, def, min, max int) (int, error) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < min || n > max {
		return 0, fmt.Errorf("query value %q: want an integer from %d to %d: %w", v, min, max, errdefs.ErrInvalid)
	}
	return n, nil
}

// parseCursor reads a time in milliseconds since the epoch; empty is zero.
func parseCursor(v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms < 0 {
		return time.Time{}, fmt.Errorf("cursor %q: want milliseconds since the epoch: %w", v, errdefs.ErrInvalid)
	}
	return time.UnixMilli(ms), nil
}
