package controlplane

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"

	"roost.dev/roost/errdefs"
	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
	"roost.dev/roost/store"
)

// errSkip aborts an UpdateSandbox whose sandbox changed since it was read.
var errSkip = errors.New("sandbox changed; skipped")

// enforceTimeouts ends the running sandboxes whose timeout has passed:
// destroyed, or paused when they were created with autoPause. Each is
// first claimed in the store (still running, still expired), so a timeout
// extended a moment ago wins.
func (s *Server) enforceTimeouts(ctx context.Context) {
	now := time.Now().UTC()
	expired, err := s.store.ExpiredSandboxes(ctx, now, store.SandboxRunning)
	if err != nil {
		s.log.Warn("list expired sandboxes failed", "err", err)
		return
	}
	for _, sb := range expired {
		if ctx.Err() != nil {
			return
		}
		if err := s.expire(ctx, sb, now); err != nil && !errors.Is(err, errSkip) {
			s.log.Warn("sandbox timeout failed", "sandbox", sb.ID, "host", sb.HostID, "err", err)
		}
	}
}

func (s *Server) expire(ctx context.Context, sb store.Sandbox, now time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	if sb.AutoPause {
		if err := s.pause(ctx, sb); err != nil {
			return err
		}
		s.log.Info("sandbox timed out", "sandbox", sb.ID, "action", "pause")
		return nil
	}
	claimed, err := s.store.UpdateSandbox(ctx, sb.ID, func(cur *store.Sandbox) error {
		if cur.State != store.SandboxRunning || cur.EndAt.IsZero() || cur.EndAt.After(now) {
			return errSkip
		}
		cur.State = store.SandboxStopped
		return nil
	})
	if err != nil {
		return fmt.Errorf("claim expired sandbox: %w", err)
	}
	if err := s.destroy(ctx, claimed); err != nil {
		return err
	}
	s.log.Info("sandbox timed out", "sandbox", sb.ID, "action", "destroy")
	return nil
}

// reconciler compares, every round, what each host's agent runs with what
// the store says. It runs on Run's goroutine only: misses needs no lock.
type reconciler struct {
	s *Server
	// misses counts each host's consecutive unanswered rounds.
	misses map[string]int
}

func (rc *reconciler) round(ctx context.Context) {
	s := rc.s
	hosts, err := s.store.ListHosts(ctx)
	if err != nil {
		s.log.Warn("reconcile: list hosts failed", "err", err)
		return
	}
	for _, h := range hosts {
		if ctx.Err() != nil {
			return
		}
		if err := rc.host(ctx, h); err != nil {
			s.log.Warn("reconcile host failed", "host", h.ID, "err", err)
		}
	}
}

// host reconciles one host.
func (rc *reconciler) host(ctx context.Context, h store.Host) error {
	s := rc.s
	listedAt := time.Now().UTC()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	resp, err := s.agents.For(h).ListSandboxes(cctx, connect.NewRequest(&hostagentv1.ListSandboxesRequest{}))
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		rc.misses[h.ID]++
		s.log.Warn("reconcile: agent did not answer", "host", h.ID, "misses", rc.misses[h.ID], "err", err)
		if rc.misses[h.ID] < s.cfg.DownAfter || h.State == store.HostDown {
			return nil
		}
		if err := s.store.SetHostState(ctx, h.ID, store.HostDown); err != nil {
			return fmt.Errorf("mark host down: %w", err)
		}
		s.log.Warn("host down", "host", h.ID)
		return rc.markLost(ctx, h.ID, nil, listedAt)
	}
	delete(rc.misses, h.ID)
	if h.State == store.HostDown {
		if err := s.store.SetHostState(ctx, h.ID, store.HostReady); err != nil {
			return fmt.Errorf("mark host ready: %w", err)
		}
		s.log.Info("host back up", "host", h.ID)
	}
	has := map[string]hostagentv1.SandboxState{}
	var usage store.HostUsage
	for _, sb := range resp.Msg.GetSandboxes() {
		has[sb.GetSandboxId()] = sb.GetState()
		usage.Sandboxes++
		usage.VCPUs += int(sb.GetLimits().GetVcpus())
		usage.MemoryMB += int64(sb.GetLimits().GetMemoryMb())
	}
	if s.cfg.Local != nil && h.ID == s.cfg.Local.HostID {
		// roost up's own agent sends no heartbeats: this listing stands
		// in for one, so /v1/hosts shows its usage as for any other.
		if err := s.store.Heartbeat(ctx, h.ID, listedAt, usage); err != nil {
			s.log.Warn("reconcile: record local host usage", "host", h.ID, "err", err)
		}
	}
	return rc.markLost(ctx, h.ID, has, listedAt)
}

// markLost marks the host's running and paused sandboxes that the agent
// does not have (all of them when has is nil) lost, unless they changed
// after listedAt. One that expired was reaped by the agent itself and is
// deleted instead; one the agent paused on its own timeout is recorded
// paused.
func (rc *reconciler) markLost(ctx context.Context, hostID string, has map[string]hostagentv1.SandboxState, listedAt time.Time) error {
	s := rc.s
	f := store.SandboxFilter{HostID: hostID, States: []store.SandboxState{store.SandboxRunning, store.SandboxPaused},
		Limit: store.MaxPageSize}
	var stale []store.Sandbox
	for {
		page, next, err := s.store.ListSandboxes(ctx, f)
		if err != nil {
			return fmt.Errorf("list sandboxes of host: %w", err)
		}
		for _, sb := range page {
			st, ok := has[sb.ID]
			switch {
			case sb.UpdatedAt.After(listedAt):
			case !ok, st == hostagentv1.SandboxState_SANDBOX_STATE_STOPPED:
				stale = append(stale, sb)
			case st == hostagentv1.SandboxState_SANDBOX_STATE_PAUSED && sb.State == store.SandboxRunning:
				rc.update(ctx, sb.ID, listedAt, store.SandboxPaused)
			}
		}
		if next == "" {
			break
		}
		f.NextToken = next
	}
	for _, sb := range stale {
		if has != nil && sb.State == store.SandboxRunning && !sb.EndAt.IsZero() && !sb.EndAt.After(listedAt) {
			s.proxy.Evict(sb.ID)
			if err := s.store.DeleteSandbox(ctx, sb.ID); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
				s.log.Warn("reconcile: delete expired sandbox failed", "sandbox", sb.ID, "err", err)
			}
			continue
		}
		rc.update(ctx, sb.ID, listedAt, store.SandboxLost)
	}
	return nil
}

// update sets a sandbox's state unless it changed after listedAt.
func (rc *reconciler) update(ctx context.Context, id string, listedAt time.Time, to store.SandboxState) {
	s := rc.s
	_, err := s.store.UpdateSandbox(ctx, id, func(cur *store.Sandbox) error {
		if cur.UpdatedAt.After(listedAt) || (cur.State != store.SandboxRunning && cur.State != store.SandboxPaused) {
			return errSkip
		}
		cur.State = to
		if to == store.SandboxLost {
			cur.Error = "its host no longer runs it"
		}
		return nil
	})
	s.proxy.Evict(id)
	switch {
	case err == nil:
		s.log.Warn("reconcile: sandbox state corrected", "sandbox", id, "state", to)
	case !errors.Is(err, errSkip) && !errors.Is(err, errdefs.ErrNotFound):
		s.log.Warn("reconcile: update sandbox failed", "sandbox", id, "err", err)
	}
}
