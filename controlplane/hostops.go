package controlplane

import (
	"context"
	"fmt"
	"net/http"
	"sync"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/store"
)

// The operator's host operations: cordon (no new sandboxes), drain
// (cordon, then pause every running sandbox of the host, memory kept
// where its runtime can), and removal of a cordoned host that holds no
// sandbox. Hibernated sandboxes stay on their host: their disks are
// host-local.

// drainParallel is how many of a host's sandboxes a drain pauses at once.
const drainParallel = 4

// drainJSON is the answer of POST /v1/hosts/{id}/drain.
type drainJSON struct {
	Host   hostJSON          `json:"host"`
	Paused []string          `json:"paused"`
	Failed map[string]string `json:"failed,omitempty"` // sandbox → why
}

func (s *Server) hostRoutes(admin func(pattern, action string, h adminHandler)) {
	admin("POST /v1/hosts/{id}/cordon", "host.cordon", func(w http.ResponseWriter, r *http.Request, _ store.AdminToken) {
		s.cordonAnswer(w, r, true)
	})
	admin("POST /v1/hosts/{id}/uncordon", "host.uncordon", func(w http.ResponseWriter, r *http.Request, _ store.AdminToken) {
		s.cordonAnswer(w, r, false)
	})
	admin("POST /v1/hosts/{id}/drain", "host.drain", s.drainHost)
	admin("DELETE /v1/hosts/{id}", "host.delete", s.deleteHost)
}

// cordon marks host id cordoned or not, and returns it.
func (s *Server) cordon(ctx context.Context, id string, cordoned bool) (store.Host, error) {
	if err := s.store.SetHostCordoned(ctx, id, cordoned); err != nil {
		return store.Host{}, notFoundAs(err, "host", id)
	}
	s.hostsChanged(ctx)
	return s.store.GetHost(ctx, id)
}

func (s *Server) cordonAnswer(w http.ResponseWriter, r *http.Request, cordoned bool) {
	id := r.PathValue("id")
	noteTarget(r, "", id)
	h, err := s.cordon(r.Context(), id, cordoned)
	if err == nil {
		var hj hostJSON
		if hj, err = s.hostView(r.Context(), h); err == nil {
			s.log.Info("host cordoned", "host", id, "cordoned", cordoned)
			writeJSON(w, http.StatusOK, hj)
			return
		}
	}
	s.fail(w, r, "cordon host", err)
}

// drainHost is POST /v1/hosts/{id}/drain: the host is cordoned, and its
// running sandboxes are paused.
func (s *Server) drainHost(w http.ResponseWriter, r *http.Request, _ store.AdminToken) {
	id := r.PathValue("id")
	noteTarget(r, "", id)
	ctx := r.Context()
	h, err := s.cordon(ctx, id, true)
	if err != nil {
		s.fail(w, r, "drain host", err)
		return
	}
	var running []store.Sandbox
	err = s.eachPage(ctx, store.SandboxFilter{HostID: id, States: []store.SandboxState{store.SandboxRunning}}, func(page []store.Sandbox) {
		running = append(running, page...)
	})
	if err != nil {
		s.fail(w, r, "drain host", err)
		return
	}
	out := drainJSON{Paused: []string{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	slots := make(chan struct{}, drainParallel)
	for _, sb := range running {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			pctx, cancel := opContext(context.WithoutCancel(ctx))
			defer cancel()
			err := s.pause(pctx, sb, true, reasonAdmin)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if out.Failed == nil {
					out.Failed = map[string]string{}
				}
				out.Failed[sb.ID] = err.Error()
				return
			}
			out.Paused = append(out.Paused, sb.ID)
		})
	}
	wg.Wait()
	if out.Host, err = s.hostView(ctx, h); err != nil {
		s.fail(w, r, "drain host", err)
		return
	}
	s.log.Info("host drained", "host", id, "paused", len(out.Paused), "failed", len(out.Failed))
	writeJSON(w, http.StatusOK, out)
}

// deleteHost is DELETE /v1/hosts/{id}: a cordoned host that holds no
// sandbox (starting, running, paused or lost) goes from the store; its
// agent's heartbeats are refused from then on.
func (s *Server) deleteHost(w http.ResponseWriter, r *http.Request, _ store.AdminToken) {
	id := r.PathValue("id")
	noteTarget(r, "", id)
	h, err := s.store.GetHost(r.Context(), id)
	switch {
	case err != nil:
		err = notFoundAs(err, "host", id)
	case s.cfg.Local != nil && id == s.cfg.Local.HostID:
		err = fmt.Errorf("host %s is this process's own agent: %w", id, errdefs.ErrConflict)
	case !h.Cordoned:
		err = fmt.Errorf("host %s is not cordoned: cordon or drain it first: %w", id, errdefs.ErrConflict)
	default:
		err = s.store.DeleteHost(r.Context(), id)
	}
	if err != nil {
		s.fail(w, r, "delete host", err)
		return
	}
	s.hostsChanged(r.Context())
	s.log.Info("host removed", "host", id)
	w.WriteHeader(http.StatusNoContent)
}

// hostsChanged has scheduling read the hosts again, here and on the
// other replicas.
func (s *Server) hostsChanged(ctx context.Context) {
	s.hosts.expire()
	announce(ctx, s.store, s.log, store.Notice{Topic: topicHosts})
}
