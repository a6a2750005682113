package agent

import (
	"context"
	"fmt"
	"runtime/debug"
	"time"

	"roost.dev/roost/errdefs"
)

// Destroy stops a sandbox and removes everything made for it: the
// runtime's sandbox, its network and slot, its state directory. It
// returns once all of it is gone; StartDestroy returns sooner. An unknown
// sandbox wraps errdefs.ErrNotFound. A sandbox still starting has its
// create cancelled. If a step fails the sandbox stays, in the error state,
// and Destroy may be called again.
func (m *Manager) Destroy(ctx context.Context, id string) error {
	t, err := m.beginDestroy(ctx, id)
	if t == nil {
		return err
	}
	<-t.done
	return t.err
}

// StartDestroy is Destroy that returns as soon as the sandbox is
// unreachable: gone from the manager (Get and SandboxAddr say not found),
// no new request reaching it, its record marked stopped; its processes end
// as soon as its teardown runs, and their connections with them. Its
// removal goes on in the background, at most maxTeardowns at once; until it ends the sandbox
// holds its network slot, so no new sandbox gets its address. A removal
// that a crash interrupts is finished by the next agent's recovery; one
// that fails puts the sandbox back, in the error state, to be destroyed
// again. When maxPendingTeardowns are under way, it waits for one to end.
// A sandbox with volumes is destroyed whole before it returns: its
// volumes are free for the next sandbox, and the content API, at once.
func (m *Manager) StartDestroy(ctx context.Context, id string) error {
	t, err := m.beginDestroy(ctx, id)
	if t == nil || !t.volumes {
		return err
	}
	<-t.done
	return t.err
}

// WaitTeardowns waits until no teardown StartDestroy began is under way,
// or ctx ends.
func (m *Manager) WaitTeardowns(ctx context.Context) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for len(m.pendingTeardowns) > 0 {
		select {
		case <-t.C:
		case <-ctx.Done():
			return fmt.Errorf("wait for sandbox teardowns: %w", ctx.Err())
		}
	}
	return nil
}

// beginDestroy cuts a sandbox off and starts its teardown, which it
// returns; nil when there is none to wait for (err says why).
func (m *Manager) beginDestroy(ctx context.Context, id string) (*teardown, error) {
	sb, err := m.lookup(id)
	if err != nil {
		return nil, err
	}
	sb.mu.Lock()
	cancelled := sb.cancel != nil
	if cancelled {
		sb.cancel()
	}
	sb.mu.Unlock()
	select {
	case m.pendingTeardowns <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("destroy sandbox %s: wait for earlier teardowns: %w", id, ctx.Err())
	}
	sb.op.Lock()
	defer sb.op.Unlock()
	if state := sb.snapshot().State; state == StateStopped || state == StateStarting {
		<-m.pendingTeardowns
		// The create this call cancelled (or a concurrent destroy) got
		// there first and removed the sandbox.
		if cancelled {
			return nil, nil
		}
		return nil, fmt.Errorf("sandbox %s: %w", id, errdefs.ErrNotFound)
	}
	rec, err := m.cutOffLocked(ctx, sb)
	if err != nil {
		<-m.pendingTeardowns
		return nil, err
	}
	t := &teardown{done: make(chan struct{}), volumes: len(rec.Spec.Volumes) > 0}
	m.wg.Go(func() {
		defer func() { <-m.pendingTeardowns }()
		m.runningTeardowns <- struct{}{}
		defer func() { <-m.runningTeardowns }()
		sb.op.Lock()
		defer sb.op.Unlock()
		t.err = m.teardownLocked(context.WithoutCancel(ctx), sb, rec, "request")
		close(t.done)
	})
	return t, nil
}

// Bounds of the background teardowns: how many run at once, and how many
// may be under way (running or waiting to) before StartDestroy waits.
// A teardown is mostly waits: for the kernel (unmounts, a namespace and a
// veth pair to free, cgroup removal) and for the network's batched walk
// of the conntrack table (up to a quarter second), so more run at once
// than there are cores.
const (
	maxTeardowns        = 16
	maxPendingTeardowns = 64
)

// teardown is one background removal of a destroyed sandbox; err is set
// when done is closed. volumes says the sandbox had volumes.
type teardown struct {
	done    chan struct{}
	err     error
	volumes bool
}

// destroyLocked destroys a sandbox whose op lock the caller holds, all of
// it before it returns. It runs to the end even if ctx is cancelled: a
// half-destroyed sandbox helps no one.
func (m *Manager) destroyLocked(ctx context.Context, sb *sandbox, reason string) error {
	rec, err := m.cutOffLocked(ctx, sb)
	if err != nil {
		return err
	}
	return m.teardownLocked(ctx, sb, rec, reason)
}

// cutOffLocked makes a sandbox whose op lock the caller holds
// unreachable, at once: its record says stopped (on disk too, so that a
// crash from here on has the next agent remove it), and the manager
// forgets it, so that no new request reaches it. Its link stays up until
// the teardown has ended its processes: their connections then close
// with a reset the other side sees (a command's stream ends with an
// error, as E2B's SDKs expect), where a link taken down first would leave
// them hanging. A VM's volumes are synced first. It returns the record as
// it was.
func (m *Manager) cutOffLocked(ctx context.Context, sb *sandbox) (record, error) {
	rec := sb.snapshot()
	if err := checkTransition(rec.State, StateStopped); err != nil {
		return record{}, err
	}
	m.syncVolumes(context.WithoutCancel(ctx), rec)
	if err := sb.setStateLocked(StateStopped, m.cfg.Now(), ""); err != nil {
		return record{}, fmt.Errorf("destroy sandbox %s: %w", rec.ID, err)
	}
	m.unregister(sb)
	return rec, nil
}

// teardownLocked removes what is left of a sandbox cutOffLocked cut off
// (rec is its record from before): the runtime's sandbox, its network,
// its slot, its state directory. If a step fails the sandbox is back in
// the manager, in the error state.
func (m *Manager) teardownLocked(ctx context.Context, sb *sandbox, rec record, reason string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	log := m.log.With("sandbox", rec.ID)
	fail := func(step string, err error) error {
		err = fmt.Errorf("destroy sandbox %s: %s: %w", rec.ID, step, err)
		// Stopped is final; a sandbox in error may be destroyed again.
		msg := err.Error()
		if serr := sb.update(func(r *record) { r.State, r.StateChanged, r.Error = StateError, m.cfg.Now(), msg }); serr != nil {
			log.Error("sandbox record not saved", "err", serr)
		}
		m.reregister(sb)
		return err
	}
	rt := m.runtimeOf(sb)
	if err := rt.Destroy(ctx, rec.key()); err != nil && !errGone(err) {
		return fail(rt.Name()+" runtime", err)
	}
	// A hibernated sandbox without a network namespace gave it up when it
	// was exported (move.go): one of that name may be the importing
	// host's, where several agents share a machine.
	if !rec.Hibernated || rec.Spec.Network.Netns != "" {
		if err := m.net.Teardown(ctx, rec.key(), rec.Slot); err != nil {
			return fail("network", err)
		}
	}
	// The slot is free once nothing of the sandbox uses its address.
	m.net.Release(rec.Slot)
	if err := removeStateDir(sb.dir); err != nil {
		// The sandbox is gone; only files remain, and the next start-up
		// tries again.
		log.Error("sandbox state directory left behind", "dir", sb.dir, "err", err)
	}
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
	if err := m.checkNotMoving(rec); err != nil {
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
