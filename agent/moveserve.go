package agent

import (
	"net/http"

	"roost.dev/roost/errdefs"
)

// moveServer serves a move's routes (wire.MovePath) on the agent's HTTP
// surface, behind its authentication: the Manager. A move's data is a
// stream of the sandbox's disk and memory, which is why it is HTTP and
// not a unary RPC.
type moveServer interface {
	serveExport(w http.ResponseWriter, r *http.Request)
	serveImport(w http.ResponseWriter, r *http.Request)
	serveCancelMove(w http.ResponseWriter, r *http.Request)
}

// serveExport is GET /moves/{id}: the export's tar. An error before the
// first byte is an error answer; after it, the connection is cut, so the
// reader sees a stream without its end.
func (m *Manager) serveExport(w http.ResponseWriter, r *http.Request) {
	out := &startedWriter{w: w}
	err := m.ExportSandbox(r.Context(), r.PathValue("id"), out)
	switch {
	case err == nil:
	case !out.started:
		errdefs.WriteHTTP(w, errdefs.HTTPStatus(err), err.Error())
	default:
		m.log.Error("sandbox export cut short", "sandbox", r.PathValue("id"), "err", err)
		panic(http.ErrAbortHandler)
	}
}

// startedWriter is an export's answer: 200 and its type at the first byte.
type startedWriter struct {
	w       http.ResponseWriter
	started bool
}

func (s *startedWriter) Write(p []byte) (int, error) {
	if !s.started {
		s.started = true
		s.w.Header().Set("Content-Type", "application/x-tar")
		s.w.WriteHeader(http.StatusOK)
	}
	return s.w.Write(p)
}

// serveImport is PUT /moves/{id}: the body is another host's export; 204
// once the sandbox is here, hibernated.
func (m *Manager) serveImport(w http.ResponseWriter, r *http.Request) {
	if _, err := m.ImportSandbox(r.Context(), r.PathValue("id"), r.Body); err != nil {
		errdefs.WriteHTTP(w, errdefs.HTTPStatus(err), err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// serveCancelMove is DELETE /moves/{id}.
func (m *Manager) serveCancelMove(w http.ResponseWriter, r *http.Request) {
	if err := m.CancelMove(r.PathValue("id")); err != nil {
		errdefs.WriteHTTP(w, errdefs.HTTPStatus(err), err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
