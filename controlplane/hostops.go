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
// where its runtime can, and move those it hibernated to other hosts,
// move.go), and removal of a cordoned host that holds no sandbox.

// drainParallel is how many of a host's sandboxes a drain pauses, or
// moves, at once.
const drainParallel = 4

// drainJSON is the answer of POST /v1/hosts/{id}/drain.
type drainJSON struct {
	Host   hostJSON          `json:"host"`
	Paused []string          `json:"paused"`
	Failed map[string]string `json:"failed,omitempty"` // sandbox → why
	// Moved are the paused sandboxes now on another host (sandbox → host).
	Moved map[string]string `json:"moved,omitempty"`
	// Kept are the paused sandboxes that stay (sandbox → why: frozen in
	// memory, volumes, no other host with room).
	Kept map[string]string `json:"kept,omitempty"`
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
	inParallel(running, func(sb store.Sandbox) {
		pctx, cancel := opContext(context.WithoutCancel(ctx))
		defer cancel()
		err := s.pause(pctx, sb, true, reasonAdmin)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			out.Failed = setWhy(out.Failed, sb.ID, err.Error())
			return
		}
		out.Paused = append(out.Paused, sb.ID)
	})
	if err := s.moveAway(ctx, h, &out); err != nil {
		s.fail(w, r, "drain host", err)
		return
	}
	if out.Host, err = s.hostView(ctx, h); err != nil {
		s.fail(w, r, "drain host", err)
		return
	}
	s.log.Info("host drained", "host", id, "paused", len(out.Paused), "failed", len(out.Failed), "moved", len(out.Moved), "kept", len(out.Kept))
	writeJSON(w, http.StatusOK, out)
}

// moveAway moves the paused sandboxes of host h to other hosts, noting
// each in out: moved, or kept and why.
func (s *Server) moveAway(ctx context.Context, h store.Host, out *drainJSON) error {
	var paused []store.Sandbox
	err := s.eachPage(ctx, store.SandboxFilter{HostID: h.ID, States: []store.SandboxState{store.SandboxPaused}}, func(page []store.Sandbox) {
		paused = append(paused, page...)
	})
	if err != nil {
		return err
	}
	var mu sync.Mutex
	inParallel(paused, func(sb store.Sandbox) {
		to, err := s.move(ctx, sb, h)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			out.Kept = setWhy(out.Kept, sb.ID, err.Error())
			return
		}
		out.Moved = setWhy(out.Moved, sb.ID, to.ID)
	})
	return nil
}

// inParallel calls fn with each of sbs, drainParallel at once, and
// returns when all have returned.
func inParallel(sbs []store.Sandbox, fn func(store.Sandbox)) {
	var wg sync.WaitGroup
	slots := make(chan struct{}, drainParallel)
	for _, sb := range sbs {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			fn(sb)
		})
	}
	wg.Wait()
}

// setWhy sets m[id] = why, making m when it is nil.
func setWhy(m map[string]string, id, why string) map[string]string {
	if m == nil {
		m = map[string]string{}
	}
	m[id] = why
	return m
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
