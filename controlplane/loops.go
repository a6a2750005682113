package controlplane

import (
	"context"
	"errors"
	"fmt"
	"time"

	"roost.dev/roost/store"
)

// errSkip aborts an UpdateSandbox whose sandbox changed since it was read.
var errSkip = errors.New("sandbox changed; skipped")

// enforceTimeouts ends the running sandboxes whose timeout has passed:
// destroyed, or paused when they were created with autoPause. Each is
// first claimed in the store (still running, still expired), so a timeout
// extended a moment ago wins.
func (s *Server) enforceTimeouts(ctx context.Context) {
	now := s.store.Now()
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
		if err := s.pause(ctx, sb, !sb.AutoPauseFilesystem, reasonTimeout); err != nil {
			return err
		}
		s.log.Info("sandbox timed out", "sandbox", sb.ID, "action", "pause")
		return nil
	}
	_, err := s.store.UpdateSandbox(ctx, sb.ID, func(cur *store.Sandbox) error {
		if cur.State != store.SandboxRunning || cur.EndAt.IsZero() || cur.EndAt.After(now) {
			return errSkip
		}
		cur.State = store.SandboxStopped
		return nil
	})
	if err != nil {
		return fmt.Errorf("claim expired sandbox: %w", err)
	}
	// The record before the claim: it was running.
	if err := s.destroy(ctx, sb, reasonTimeout); err != nil {
		return err
	}
	s.log.Info("sandbox timed out", "sandbox", sb.ID, "action", "destroy")
	return nil
}
