package controlplane

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"roost.dev/roost/store"
)

// auditActions names the API routes whose every request the audit log
// records, by their mux pattern; the operator's routes name theirs in
// adminRoutes.
var auditActions = map[string]string{
	"POST /v2/sandboxes":               "sandbox.create",
	"POST /sandboxes":                  "sandbox.create",
	"DELETE /sandboxes/{id}":           "sandbox.kill",
	"POST /sandboxes/{id}/pause":       "sandbox.pause",
	"POST /v2/sandboxes/{id}/connect":  "sandbox.connect",
	"POST /sandboxes/{id}/connect":     "sandbox.connect",
	"POST /sandboxes/{id}/resume":      "sandbox.resume",
	"POST /sandboxes/{id}/timeout":     "sandbox.timeout",
	"POST /sandboxes/{id}/refreshes":   "sandbox.refresh",
	"POST /sandboxes/{id}/fork":        "sandbox.fork",
	"POST /sandboxes/{id}/snapshots":   "sandbox.snapshot",
	"POST /v1/sandboxes/{id}/snapshot": "sandbox.hibernate",
	"POST /api-keys":                   "key.create",
	"PATCH /api-keys/{id}":             "key.rename",
	"DELETE /api-keys/{id}":            "key.delete",
	"POST /access-tokens":              "access_token.create",
	"DELETE /access-tokens/{id}":       "access_token.delete",
	"POST /events/webhooks":            "webhook.create",
	"PATCH /events/webhooks/{id}":      "webhook.update",
	"DELETE /events/webhooks/{id}":     "webhook.delete",
}

// auditNote is what a request's handlers tell the audit log about it:
// who made it, which team it acted on, what it acted on, and why it
// failed.
type auditNote struct {
	actor, team, target, err string
}

type auditNoteKey struct{}

func noteOf(r *http.Request) *auditNote {
	n, _ := r.Context().Value(auditNoteKey{}).(*auditNote)
	return n
}

// noteActor records who made the request (and, when known, its team).
func noteActor(r *http.Request, actor, team string) {
	if n := noteOf(r); n != nil {
		n.actor = actor
		if team != "" {
			n.team = team
		}
	}
}

// noteTarget records what the request acted on, of which team.
func noteTarget(r *http.Request, team, target string) {
	if n := noteOf(r); n != nil {
		n.team, n.target = team, target
	}
}

// noteError records why the request failed.
func noteError(r *http.Request, msg string) {
	if n := noteOf(r); n != nil {
		n.err = msg
	}
}

// audited records every request h serves as action, with its outcome,
// once h returns; action "" records nothing.
func (s *Server) audited(action string, h http.Handler) http.Handler {
	if action == "" {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now().UTC()
		n := &auditNote{actor: "unauthenticated", target: r.PathValue("id")}
		rec := &opRecorder{ResponseWriter: w}
		h.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), auditNoteKey{}, n)))
		status := rec.status
		if status == 0 {
			status = http.StatusOK
		}
		s.audit.add(store.AuditEntry{At: start, TeamID: n.team, Actor: n.actor, Action: action, Target: n.target,
			Source: clientAddr(r), Status: status, Error: n.err})
	})
}

// clientAddr is the address the request came from (the proxy in front,
// if any: a forwarded header could be anyone's word).
func clientAddr(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

// auditQueueLen bounds the entries waiting for the store; a request
// that finds the queue full waits for room, so none is dropped.
const auditQueueLen = 4096

// auditWriter writes audit entries to the store in batches, off the
// requests' path. It lives from New to Close.
type auditWriter struct {
	st   store.Store
	log  *slog.Logger
	q    chan store.AuditEntry
	done chan struct{}
	once sync.Once
	// off drops every entry: what benchmarks compare with (tests only).
	off atomic.Bool
}

func newAuditWriter(st store.Store, log *slog.Logger) *auditWriter {
	a := &auditWriter{st: st, log: log, q: make(chan store.AuditEntry, auditQueueLen), done: make(chan struct{})}
	go a.run()
	return a
}

func (a *auditWriter) add(e store.AuditEntry) {
	if a.off.Load() {
		return
	}
	defer func() { _ = recover() }() // closed: the server is stopping
	a.q <- e
}

func (a *auditWriter) run() {
	defer close(a.done)
	// No lingering: an operator who acts and then reads the audit log
	// must find the act there. What queued meanwhile shares the write.
	for e := range a.q {
		a.write(gather(a.q, e, 0))
	}
}

func (a *auditWriter) write(batch []store.AuditEntry) {
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	if err := a.st.AppendAudit(ctx, batch...); err != nil {
		a.log.Error("audit entries not stored", "entries", len(batch), "err", err)
	}
}

// close writes what is queued and stops.
func (a *auditWriter) close() {
	a.once.Do(func() { close(a.q) })
	<-a.done
}

// auditEntryJSON is one audit entry of GET /v1/audit.
type auditEntryJSON struct {
	ID     string    `json:"id"`
	At     time.Time `json:"at"`
	TeamID string    `json:"teamID"`
	Actor  string    `json:"actor"`
	Action string    `json:"action"`
	Target string    `json:"target"`
	Source string    `json:"source"`
	Status int       `json:"status"`
	Error  string    `json:"error,omitempty"`
}

// listAudit is GET /v1/audit?since=&until=&action=&limit=&cursor=: the
// team's entries, oldest first. The operator (X-Admin-Token without
// X-Team-ID) reads every team's, or one team's with ?team=.
func (s *Server) listAudit(w http.ResponseWriter, r *http.Request, teamID string) {
	q := r.URL.Query()
	f := store.AuditFilter{TeamID: teamID, Action: q.Get("action"), Cursor: q.Get("cursor")}
	var err error
	if f.Since, err = parseTimeParam(q, "since"); err == nil {
		f.Until, err = parseTimeParam(q, "until")
	}
	if err == nil && q.Has("limit") {
		f.Limit, err = strconv.Atoi(q.Get("limit"))
		if err != nil || f.Limit < 1 || f.Limit > store.MaxPageSize {
			err = invalidf("limit: want 1 to %d", store.MaxPageSize)
		}
	}
	var entries []store.AuditEntry
	var next string
	if err == nil {
		entries, next, err = s.store.ListAudit(r.Context(), f)
	}
	if err != nil {
		s.fail(w, r, "list audit", err)
		return
	}
	out := struct {
		Entries    []auditEntryJSON `json:"entries"`
		NextCursor string           `json:"nextCursor,omitempty"`
	}{Entries: make([]auditEntryJSON, 0, len(entries)), NextCursor: next}
	for _, e := range entries {
		out.Entries = append(out.Entries, auditEntryJSON(e))
	}
	writeJSON(w, http.StatusOK, out)
}

// parseTimeParam reads q[name] as RFC 3339 or Unix seconds; absent is
// the zero time.
func parseTimeParam(q map[string][]string, name string) (time.Time, error) {
	vs := q[name]
	if len(vs) == 0 || vs[0] == "" {
		return time.Time{}, nil
	}
	if n, err := strconv.ParseInt(vs[0], 10, 64); err == nil && n >= 0 {
		return time.Unix(n, 0).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339Nano, vs[0])
	if err != nil {
		return time.Time{}, invalidf("%s=%q: want RFC 3339 or Unix seconds", name, vs[0])
	}
	return t, nil
}
