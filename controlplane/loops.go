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
	s.destroyExpired(ctx, now)
	// What is left: those that pause, and any past destroyExpired's
	// batch, one by one.
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

// destroyExpired destroys a batch of the sandboxes whose timeout has
// passed and that do not pause then. They are claimed together (one
// statement) and destroyed on their hosts one by one; the records of
// those destroyed are deleted together, and the other replicas told in
// one notice. A claimed sandbox its host did not destroy keeps its
// stopped record, which the reconciler settles past Config.CreateGrace,
// as one whose destroy this process did not live to finish.
func (s *Server) destroyExpired(ctx context.Context, now time.Time) {
	claimed, err := s.store.StopExpired(ctx, now, maxBatch)
	if err != nil {
		s.log.Warn("claim expired sandboxes failed", "err", err)
		return
	}
	var gone []store.Sandbox
	var ids []string
	for _, sb := range claimed {
		if ctx.Err() != nil {
			break // the rest keep their stopped records
		}
		sb.State = store.SandboxRunning // as it was: its event counts it out of the running
		octx, cancel := context.WithTimeout(ctx, rpcTimeout)
		err := s.destroyOnHost(octx, sb)
		cancel()
		if err != nil {
			s.log.Warn("sandbox timeout failed", "sandbox", sb.ID, "host", sb.HostID, "err", err)
			continue
		}
		gone, ids = append(gone, sb), append(ids, sb.ID)
	}
	if len(gone) == 0 {
		return
	}
	// What its host destroyed loses its record even when ctx has ended.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rpcTimeout)
	defer cancel()
	if _, err := s.store.DeleteSandboxes(dctx, ids...); err != nil {
		s.log.Warn("delete timed-out sandboxes failed", "sandboxes", len(ids), "err", err)
		return
	}
	s.destroyed(reasonTimeout, gone...)
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
