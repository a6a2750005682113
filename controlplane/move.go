package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/store"
	"roost.dev/roost/wire"
)

// moveTimeout bounds one sandbox's move: its memory and disk cross the
// network twice (from its host to this replica, and on to the other).
const moveTimeout = 10 * time.Minute

// move moves the paused sandbox sb, which its host from has hibernated,
// to another host of from's runtime and returns that host. This replica
// relays the sandbox's stream from one agent to the other (agents need
// not reach each other). Steps, each undone when a later one fails:
//  1. from exports it, and refuses to resume it from then on;
//  2. the other host imports it, hibernated;
//  3. the record names the other host, if it still names from and the
//     sandbox is still paused (no resume, delete or move came between);
//  4. from destroys its copy. When it cannot (from is unreachable just
//     then), the reconciler does once the create grace has passed: from
//     holds a sandbox whose live record names another agent's host
//     (reconcile.go, unowned).
//
// The sandbox is never runnable on two hosts, and never on none.
func (s *Server) move(ctx context.Context, sb store.Sandbox, from store.Host) (store.Host, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), moveTimeout)
	defer cancel()
	to, err := s.scheduleWhere(ctx, func(h store.Host) bool { return h.ID != from.ID && h.Runtime == from.Runtime })
	if err != nil {
		return store.Host{}, fmt.Errorf("no other %s host has room: %w", from.Runtime, err)
	}
	export, err := s.moveRequest(ctx, from, http.MethodGet, sb.ID, nil)
	if err != nil {
		return store.Host{}, fmt.Errorf("export from host %s: %w", from.ID, err)
	}
	defer export.Body.Close()
	imported, err := s.moveRequest(ctx, to, http.MethodPut, sb.ID, export.Body)
	if err == nil {
		imported.Body.Close()
	}
	if err != nil {
		s.cancelMove(ctx, from, sb.ID)
		return store.Host{}, fmt.Errorf("import into host %s: %w", to.ID, err)
	}
	_, err = s.store.UpdateSandbox(ctx, sb.ID, func(r *store.Sandbox) error {
		if r.HostID != from.ID || r.State != store.SandboxPaused {
			return fmt.Errorf("sandbox %s changed while it moved (now %s on host %s): %w", sb.ID, r.State, r.HostID, errdefs.ErrConflict)
		}
		r.HostID, r.ClientID = to.ID, to.ID
		return nil
	})
	if err != nil {
		moved := sb
		moved.HostID = to.ID
		if derr := s.destroyOnHost(ctx, moved); derr != nil {
			s.log.Error("moved sandbox's copy not destroyed", "sandbox", sb.ID, "host", to.ID, "err", derr)
		}
		s.cancelMove(ctx, from, sb.ID)
		return store.Host{}, err
	}
	s.evict(sb.ID)
	s.hosts.expire()
	if err := s.destroyOnHost(ctx, sb); err != nil {
		s.log.Warn("moved sandbox's old copy left for the reconciler", "sandbox", sb.ID, "host", from.ID, "err", err)
	}
	s.log.Info("sandbox moved", "sandbox", sb.ID, "from", from.ID, "to", to.ID)
	return to, nil
}

// cancelMove lets host h resume sandbox id again, after a move that failed.
func (s *Server) cancelMove(ctx context.Context, h store.Host, id string) {
	resp, err := s.moveRequest(ctx, h, http.MethodDelete, id, nil)
	if err != nil {
		s.log.Error("move not cancelled: the sandbox resumes on its host once the hold ends", "sandbox", id, "host", h.ID, "err", err)
		return
	}
	resp.Body.Close()
}

// moveRequest makes a request of host h's move route for sandbox id, and
// returns its answer when it is a success; else the answer's error.
func (s *Server) moveRequest(ctx context.Context, h store.Host, method, id string, body io.Reader) (*http.Response, error) {
	base, err := url.Parse(h.URL)
	if err != nil || h.URL == "" {
		return nil, fmt.Errorf("host %s has no usable address %q: %w", h.ID, h.URL, errdefs.ErrUnavailable)
	}
	req, err := http.NewRequestWithContext(ctx, method, base.JoinPath(wire.MovePath, id).String(), body)
	if err != nil {
		return nil, err
	}
	if tok := s.agents.token(h.ID); tok != "" {
		req.Header.Set(wire.HeaderAgentToken, tok)
	}
	resp, err := s.agents.client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("host %s: %w", h.ID, errdefs.ErrTimeout)
		}
		return nil, fmt.Errorf("host %s: %v: %w", h.ID, err, errdefs.ErrUnreachable)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, errdefs.ReadHTTPError(resp)
	}
	return resp, nil
}
