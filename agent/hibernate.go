package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"roost.dev/roost/errdefs"
)

// hibernateTimeout bounds writing a sandbox's memory to disk, or reading it
// back and waiting for envd: under emulation that takes seconds per
// hundred MiB.
const hibernateTimeout = 3 * time.Minute

// Hibernate pauses a sandbox (unless it is paused already), has the runtime
// snapshot it to disk and end its process, and keeps it paused: it holds
// no memory or CPU until Resume restores it, in this agent or the next.
// It wraps errdefs.ErrUnsupported when the runtime cannot snapshot (it,
// or this sandbox) and errdefs.ErrConflict when the sandbox is neither
// running nor paused, or hibernated already. A sandbox that was running
// and could not be snapshotted runs on.
func (m *Manager) Hibernate(ctx context.Context, id string) (Sandbox, error) {
	sb, err := m.lookup(id)
	if err != nil {
		return Sandbox{}, err
	}
	sb.op.Lock()
	defer sb.op.Unlock()
	wasRunning := sb.snapshot().State == StateRunning
	if err := m.hibernateLocked(ctx, sb); err != nil {
		if wasRunning && errors.Is(err, errdefs.ErrUnsupported) && sb.snapshot().State == StatePaused {
			m.thawLocked(ctx, sb)
		}
		return Sandbox{}, fmt.Errorf("hibernate sandbox %s: %w", id, err)
	}
	return sb.snapshot().view(), nil
}

// thawLocked resumes a sandbox that a refused hibernation left frozen.
func (m *Manager) thawLocked(ctx context.Context, sb *sandbox) {
	p, err := m.pauser()
	if err == nil {
		err = p.Resume(context.WithoutCancel(ctx), sb.snapshot().key())
	}
	if err == nil {
		err = sb.setStateLocked(StateRunning, m.cfg.Now(), "")
	}
	if err != nil {
		m.log.Error("sandbox left paused after a refused hibernation", "sandbox", sb.snapshot().ID, "err", err)
	}
}

// PauseToDisk is E2B's pause: the sandbox hibernates where the runtime
// can snapshot it, its memory freed, and is frozen in place where it
// cannot (a runtime without snapshots, or one that refuses this sandbox:
// CRIU and a process it does not support). A frozen sandbox's record says
// why it was not hibernated (Sandbox.PauseNote).
func (m *Manager) PauseToDisk(ctx context.Context, id string) (Sandbox, error) {
	sb, err := m.lookup(id)
	if err != nil {
		return Sandbox{}, err
	}
	sb.op.Lock()
	defer sb.op.Unlock()
	if err := m.pauseToDiskLocked(ctx, sb); err != nil {
		return Sandbox{}, fmt.Errorf("pause sandbox %s: %w", id, err)
	}
	return sb.snapshot().view(), nil
}

func (m *Manager) pauseToDiskLocked(ctx context.Context, sb *sandbox) error {
	if _, err := m.snapshotter(); err != nil {
		return m.pauseLocked(ctx, sb)
	}
	err := m.hibernateLocked(ctx, sb)
	if errors.Is(err, errdefs.ErrUnsupported) && sb.snapshot().State == StatePaused {
		note := err.Error()
		if uerr := sb.update(func(r *record) { r.PauseNote = note }); uerr != nil {
			return uerr
		}
		m.log.Warn("sandbox frozen instead of hibernated", "sandbox", sb.snapshot().ID, "why", note)
		return nil
	}
	return err
}

func (m *Manager) hibernateLocked(ctx context.Context, sb *sandbox) error {
	s, err := m.snapshotter()
	if err != nil {
		return err
	}
	rec := sb.snapshot()
	switch {
	case rec.Hibernated:
		return fmt.Errorf("sandbox is already hibernated: %w", errdefs.ErrConflict)
	case rec.State == StateRunning:
		if err := m.pauseLocked(ctx, sb); err != nil {
			return err
		}
	case rec.State != StatePaused:
		return fmt.Errorf("sandbox is %s, not running or paused: %w", rec.State, errdefs.ErrConflict)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), hibernateTimeout)
	defer cancel()
	state, err := s.Snapshot(ctx, rec.key())
	if err != nil {
		err = fmt.Errorf("%s runtime: %w", m.rt.Name(), err)
		// A failed snapshot may leave the sandbox running (QEMU continues
		// after a failed migration); it must stay as paused as it says.
		if p, perr := m.pauser(); perr == nil {
			if perr := p.Pause(ctx, rec.key()); perr == nil {
				return err
			}
		}
		return m.failLocked(sb, err)
	}
	if err := sb.update(func(r *record) {
		r.Hibernated, r.Pid, r.Driver, r.StateChanged, r.PauseNote = true, 0, state, m.cfg.Now(), ""
	}); err != nil {
		return err
	}
	m.log.Info("sandbox hibernated", "sandbox", rec.ID)
	return nil
}

// ensureNetwork sets up again the network of a sandbox whose processes
// are gone (hibernated, halted) when its namespace is gone too, as after
// a reboot of the host: on its slot, so with its address.
func (m *Manager) ensureNetwork(ctx context.Context, sb *sandbox) error {
	rec := sb.snapshot()
	if _, err := os.Stat(rec.Spec.Network.Netns); err == nil || !errors.Is(err, os.ErrNotExist) {
		return err
	}
	nw, err := m.net.Setup(ctx, rec.key(), rec.Slot, rec.Internet)
	if err != nil {
		return fmt.Errorf("network of a sandbox whose namespace is gone: %w", err)
	}
	m.log.Info("sandbox network set up again", "sandbox", rec.ID, "slot", rec.Slot)
	return sb.update(func(r *record) { r.Spec.Network = nw })
}

// restoreLocked brings a hibernated sandbox back: a new process from its
// snapshot, envd healthy, and envd's clock set again (the guest's stood
// still while it was on disk). On success the sandbox is no longer
// hibernated; its state is the caller's to set. A failed restore leaves it
// hibernated when nothing runs, so Resume may be tried again.
func (m *Manager) restoreLocked(ctx context.Context, sb *sandbox) error {
	s, err := m.snapshotter()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), hibernateTimeout)
	defer cancel()
	if err := m.ensureNetwork(ctx, sb); err != nil {
		return err
	}
	rec := sb.snapshot()
	inst, err := s.Restore(ctx, rec.Spec, rec.Driver)
	if err != nil {
		return fmt.Errorf("%s runtime: %w", m.rt.Name(), err)
	}
	if err := sb.update(func(r *record) { r.Hibernated, r.Envd, r.Pid, r.Driver = false, inst.Envd, inst.Pid, inst.State }); err != nil {
		return m.failLocked(sb, err)
	}
	if err := m.envd.waitHealthy(ctx, inst.Envd, m.cfg.EnvdTimeout); err != nil {
		return m.failLocked(sb, err)
	}
	if err := m.envd.init(ctx, inst.Envd, rec.EnvdToken, envdInit{Timestamp: m.cfg.Now().UTC()}); err != nil {
		return m.failLocked(sb, err)
	}
	m.log.Info("sandbox restored", "sandbox", rec.ID, "pid", inst.Pid, "envd", inst.Envd.String())
	return nil
}
