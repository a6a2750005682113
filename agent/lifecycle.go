package agent

import (
	"context"
	"fmt"
	"runtime/debug"
	"time"

	"roost.dev/roost/errdefs"
)

// Destroy stops a sandbox and removes everything made for it: the
// runtime's sandbox, its network and slot, its state directory. An unknown
// sandbox wraps errdefs.ErrNotFound. A sandbox still starting has its
// create cancelled. If a step fails the sandbox stays, in the error state,
// and Destroy may be called again.
func (m *Manager) Destroy(ctx context.Context, id string) error {
	sb, err := m.lookup(id)
	if err != nil {
		return err
	}
	sb.mu.Lock()
	cancelled := sb.cancel != nil
	if cancelled {
		sb.cancel()
	}
	sb.mu.Unlock()
	sb.op.Lock()
	defer sb.op.Unlock()
	if state := sb.snapshot().State; state == StateStopped || state == StateStarting {
		// The create this call cancelled (or a concurrent destroy) got
		// there first and removed the sandbox.
		if cancelled {
			return nil
		}
		return fmt.Errorf("sandbox %s: %w", id, errdefs.ErrNotFound)
	}
	return m.destroyLocked(ctx, sb, "request")
}

// destroyLocked destroys a sandbox whose op lock the caller holds. It runs
// to the end even if ctx is cancelled: a half-destroyed sandbox helps no one.
func (m *Manager) destroyLocked(ctx context.Context, sb *sandbox, reason string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	rec := sb.snapshot()
	if err := checkTransition(rec.State, StateStopped); err != nil {
		return err
	}
	log := m.log.With("sandbox", rec.ID)
	fail := func(step string, err error) error {
		err = fmt.Errorf("destroy sandbox %s: %s: %w", rec.ID, step, err)
		if serr := sb.setStateLocked(StateError, m.cfg.Now(), err.Error()); serr != nil {
			log.Error("sandbox record not saved", "err", serr)
		}
		return err
	}
	m.syncVolumes(ctx, rec)
	rt := m.runtimeOf(sb)
	if err := rt.Destroy(ctx, rec.key()); err != nil && !errGone(err) {
		return fail(rt.Name()+" runtime", err)
	}
	if err := m.net.Teardown(ctx, rec.key(), rec.Slot); err != nil {
		return fail("network", err)
	}
	// Stopped before its slot is free: the slot's address may go to the
	// next sandbox at once, and nothing may still send this one's traffic
	// there (SandboxAddr answers only for running sandboxes).
	sb.mu.Lock()
	sb.rec.State, sb.rec.StateChanged = StateStopped, m.cfg.Now()
	sb.mu.Unlock()
	m.net.Release(rec.Slot)
	// The files go before the record: once Get says a sandbox is gone,
	// nothing of it is left.
	if err := removeStateDir(sb.dir); err != nil {
		// The sandbox is gone; only files remain, and the next start-up
		// tries again.
		log.Error("sandbox state directory left behind", "dir", sb.dir, "err", err)
	}
	m.unregister(sb)
	log.Info("sandbox destroyed", "reason", reason, "template", rec.Template)
	return nil
}

// Pause freezes a running sandbox. It wraps errdefs.ErrConflict when the
// sandbox is not running and errdefs.ErrUnsupported when the runtime
// cannot pause.
func (m *Manager) Pause(ctx context.Context, id string) (Sandbox, error) {
	sb, err := m.lookup(id)
	if err != nil {
		return Sandbox{}, err
	}
	sb.op.Lock()
	defer sb.op.Unlock()
	if err := m.pauseLocked(ctx, sb); err != nil {
		return Sandbox{}, fmt.Errorf("pause sandbox %s: %w", id, err)
	}
	return sb.snapshot().view(), nil
}

func (m *Manager) pauseLocked(ctx context.Context, sb *sandbox) error {
	rec := sb.snapshot()
	if err := checkTransition(rec.State, StatePaused); err != nil {
		return err
	}
	p, err := m.pauser()
	if err != nil {
		return err
	}
	m.syncVolumes(ctx, rec)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	if err := p.Pause(ctx, rec.key()); err != nil {
		return m.failLocked(sb, fmt.Errorf("%s runtime: %w", m.rt.Name(), err))
	}
	if err := sb.setStateLocked(StatePaused, m.cfg.Now(), ""); err != nil {
		return err
	}
	m.log.Info("sandbox paused", "sandbox", rec.ID)
	return nil
}

// Resume thaws a paused sandbox (restores a hibernated one, boots a
// halted one afresh) and restarts its timeout: timeout from now, or the
// sandbox's own timeout when zero. It wraps errdefs.ErrConflict when the
// sandbox is not paused, or when auto (traffic's
// resume) finds it halted: only an explicit resume boots it afresh.
func (m *Manager) Resume(ctx context.Context, id string, timeout time.Duration, auto bool) (Sandbox, error) {
	if timeout != 0 {
		if err := checkTimeout(timeout); err != nil {
			return Sandbox{}, err
		}
	}
	sb, err := m.lookup(id)
	if err != nil {
		return Sandbox{}, err
	}
	sb.op.Lock()
	defer sb.op.Unlock()
	rec := sb.snapshot()
	if err := checkTransition(rec.State, StateRunning); err != nil || rec.State != StatePaused {
		if err == nil {
			err = fmt.Errorf("sandbox is %s, not paused: %w", rec.State, errdefs.ErrConflict)
		}
		return Sandbox{}, fmt.Errorf("resume sandbox %s: %w", id, err)
	}
	if rec.Halted && auto {
		return Sandbox{}, fmt.Errorf("resume sandbox %s: it was paused without its memory (keepMemory: false): only connect or resume boots it afresh, not traffic: %w",
			id, errdefs.ErrConflict)
	}
	if rec.Halted {
		if err := m.bootLocked(ctx, sb); err != nil {
			return Sandbox{}, fmt.Errorf("resume sandbox %s: %w", id, err)
		}
	} else if rec.Hibernated {
		if err := m.restoreLocked(ctx, sb); err != nil {
			return Sandbox{}, fmt.Errorf("resume sandbox %s: %w", id, err)
		}
	} else {
		p, err := m.pauser()
		if err != nil {
			return Sandbox{}, fmt.Errorf("resume sandbox %s: %w", id, err)
		}
		octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
		defer cancel()
		if err := p.Resume(octx, rec.key()); err != nil {
			return Sandbox{}, fmt.Errorf("resume sandbox %s: %w", id, m.failLocked(sb, fmt.Errorf("%s runtime: %w", m.rt.Name(), err)))
		}
	}
	if timeout == 0 {
		timeout = rec.timeout()
	}
	now := m.cfg.Now()
	sb.mu.Lock()
	sb.rec.EndAt, sb.rec.PauseNote = now.Add(timeout), ""
	sb.mu.Unlock()
	if err := sb.setStateLocked(StateRunning, now, ""); err != nil {
		return Sandbox{}, fmt.Errorf("resume sandbox %s: %w", id, err)
	}
	m.log.Info("sandbox resumed", "sandbox", id)
	return sb.snapshot().view(), nil
}

// failLocked puts a sandbox whose runtime call failed in the error state
// and returns err. A sandbox in error can only be destroyed.
func (m *Manager) failLocked(sb *sandbox, err error) error {
	if serr := sb.setStateLocked(StateError, m.cfg.Now(), err.Error()); serr != nil {
		m.log.Error("sandbox record not saved", "sandbox", sb.rec.ID, "err", serr)
	}
	return err
}

// SetTimeout moves a sandbox's end to now + timeout; 0 ends it now (the
// reaper runs its timeout action on its next round).
func (m *Manager) SetTimeout(id string, timeout time.Duration) (Sandbox, error) {
	if timeout != 0 { // 0: end now
		if err := checkTimeout(timeout); err != nil {
			return Sandbox{}, err
		}
	}
	sb, err := m.lookup(id)
	if err != nil {
		return Sandbox{}, err
	}
	sb.op.Lock()
	defer sb.op.Unlock()
	if st := sb.snapshot().State; st == StateStopped {
		return Sandbox{}, fmt.Errorf("sandbox %s: %w", id, errdefs.ErrNotFound)
	}
	if err := sb.update(func(r *record) { r.EndAt = m.cfg.Now().Add(timeout) }); err != nil {
		return Sandbox{}, fmt.Errorf("set timeout of sandbox %s: %w", id, err)
	}
	return sb.snapshot().view(), nil
}

// reapLoop ends running sandboxes whose end has passed, until the manager
// closes.
func (m *Manager) reapLoop() {
	t := time.NewTicker(m.cfg.ReapInterval)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
			m.reapOnce()
		}
	}
}

// reapOnce destroys (or, with auto-pause, pauses) every running sandbox
// past its end. A sandbox busy with another operation is left for the next
// round. A panic is logged, not fatal: the next tick tries again.
func (m *Manager) reapOnce() {
	defer func() {
		if p := recover(); p != nil {
			m.log.Error("reaper panicked", "panic", p, "stack", string(debug.Stack()))
		}
	}()
	now := m.cfg.Now()
	m.mu.Lock()
	var due []*sandbox
	for _, sb := range m.sandboxes {
		sb.mu.Lock()
		if sb.rec.State == StateRunning && !sb.rec.EndAt.IsZero() && now.After(sb.rec.EndAt) {
			due = append(due, sb)
		}
		sb.mu.Unlock()
	}
	m.mu.Unlock()
	for _, sb := range due {
		if m.ctx.Err() != nil {
			return
		}
		m.reap(sb, now)
	}
}

func (m *Manager) reap(sb *sandbox, now time.Time) {
	if !sb.op.TryLock() {
		return
	}
	defer sb.op.Unlock()
	rec := sb.snapshot()
	// Checked again under the lock: a Resume or SetTimeout may have won.
	if rec.State != StateRunning || !now.After(rec.EndAt) {
		return
	}
	if _, err := m.pauser(); rec.AutoPause && err == nil {
		m.log.Info("sandbox timed out", "sandbox", rec.ID, "action", "pause", "end_at", rec.EndAt)
		pause := m.pauseToDiskLocked
		if rec.AutoPauseFilesystem {
			pause = m.haltLocked
		}
		if err := pause(m.ctx, sb); err != nil {
			m.log.Error("sandbox pause on timeout failed", "sandbox", rec.ID, "err", err)
		}
		return
	}
	m.log.Info("sandbox timed out", "sandbox", rec.ID, "action", "destroy", "end_at", rec.EndAt)
	if err := m.destroyLocked(m.ctx, sb, "timeout"); err != nil {
		m.log.Error("sandbox destroy on timeout failed", "sandbox", rec.ID, "err", err)
	}
}
