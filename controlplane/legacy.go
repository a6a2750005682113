package controlplane

import (
	"fmt"
	"net/http"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/store"
)

// E2B's legacy sandbox routes. Create and connect share their handlers
// with the /v2 routes; the list, resume and refresh below answer as E2B's
// REST description says these deprecated operations do.

// Defaults of the legacy bodies, E2B's.
const (
	// resumeDefaultTimeout is a resume's timeout when the body has none.
	resumeDefaultTimeout = 15 * time.Second
	// minRefresh is the least a refresh keeps a sandbox alive, and what
	// an absent duration means.
	minRefresh = 15 * time.Second
	// maxRefresh is the most a refresh's duration may be.
	maxRefresh = time.Hour
)

// listRunningSandboxes is GET /sandboxes, E2B's deprecated list: the
// team's running sandboxes (not paused ones), all in one answer, filtered
// only by metadata.
func (s *Server) listRunningSandboxes(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	md, err := parseMetadataQuery(r.URL.Query().Get("metadata"))
	if err != nil {
		s.fail(w, r, "list running sandboxes", err)
		return
	}
	out := []listedJSON{}
	f := store.SandboxFilter{TeamID: key.TeamID, States: []store.SandboxState{store.SandboxRunning}, Metadata: md}
	if err := s.eachPage(r.Context(), f, func(page []store.Sandbox) { out = appendListed(out, page) }); err != nil {
		s.fail(w, r, "list running sandboxes", fmt.Errorf("list running sandboxes: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// resumeSandbox is POST /sandboxes/{id}/resume, E2B's deprecated resume:
// a paused sandbox is resumed for the body's timeout (201); a running one
// is 409. The body's deprecated autoPause is not acted on: a sandbox's
// timeout action is the one it was created with.
func (s *Server) resumeSandbox(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	d, err := parseTimeoutBody(r.Body, resumeDefaultTimeout)
	if err != nil {
		s.fail(w, r, "resume sandbox", err)
		return
	}
	sb, err := s.usableSandbox(r, key)
	if err == nil && sb.State == store.SandboxRunning {
		err = fmt.Errorf("sandbox %s is already running: %w", sb.ID, errdefs.ErrConflict)
	}
	if err != nil {
		s.fail(w, r, "resume sandbox", err)
		return
	}
	s.resumeAnswer(w, r, "resume sandbox", sb, d)
}

// refreshSandbox is POST /sandboxes/{id}/refreshes: a running sandbox
// lives at least the body's duration more (204); an end already later is
// kept. A sandbox that is not running is 404, the only refusal E2B's
// description gives this route.
func (s *Server) refreshSandbox(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	d, err := parseRefreshBody(r.Body)
	if err != nil {
		s.fail(w, r, "refresh sandbox", err)
		return
	}
	sb, err := s.teamSandbox(r, key)
	if err == nil && sb.State != store.SandboxRunning {
		err = fmt.Errorf("sandbox %s is %s, not running: %w", sb.ID, sb.State, errdefs.ErrNotFound)
	}
	if err != nil {
		s.fail(w, r, "refresh sandbox", err)
		return
	}
	ctx, cancel := opContext(r.Context())
	defer cancel()
	if err := s.extend(ctx, sb, d, false); err != nil {
		s.fail(w, r, "refresh sandbox", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
