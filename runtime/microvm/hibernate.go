package microvm

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/console"
	"roost.dev/roost/runtime/handles"
	"roost.dev/roost/runtime/proc"
)

// snapshotTimeout bounds writing or loading a snapshot.
const snapshotTimeout = 2 * time.Minute

// attachTimeout bounds how long a re-adopted VMM may take to answer.
const attachTimeout = 5 * time.Second

// load reads the saved state of spec's sandbox: st, or for a sandbox an
// older agent recorded, the driver's own state file.
func (s *Shell) load(spec runtime.Spec, st runtime.DriverState) (State, error) {
	var vm State
	err := handles.Decode(st, stateVersion, filepath.Join(spec.StateDir, s.cfg.LegacyState), &vm)
	return vm, err
}

// Recover implements runtime.Runtime. A running VMM is re-adopted through
// its control socket; a hibernated sandbox is restored; anything else is
// cleaned up and reported as not found.
func (s *Shell) Recover(ctx context.Context, spec runtime.Spec, st runtime.DriverState) (runtime.Instance, error) {
	if m, err := s.handles.Get(spec.ID); err == nil {
		return m.instance()
	}
	vm, err := s.load(spec, st)
	if err != nil {
		return runtime.Instance{}, fmt.Errorf("sandbox %s: no usable state (%v): %w", spec.ID, err, errdefs.ErrNotFound)
	}
	log := s.log.With("sandbox", spec.ID)
	if vm.Interface == "" { // an older agent's state
		vm.Interface = spec.Network.Interface
	}
	if vm.Pid == 0 && exists(vm.Snapshot) {
		log.Info("recover: restoring hibernated sandbox")
		return s.Restore(ctx, spec, st)
	}
	if vm.Pid == 0 && vm.Halted {
		return runtime.Instance{}, fmt.Errorf("sandbox %s is halted: Boot starts it: %w", spec.ID, errdefs.ErrConflict)
	}
	if !vm.Alive() {
		log.Info("recover: vmm is gone; cleaning up", "vmm", s.cfg.Name, "pid", vm.Pid)
		_ = RemoveFiles(s.files(spec.StateDir)...)
		return runtime.Instance{}, fmt.Errorf("sandbox %s: %s exited: %w", spec.ID, s.cfg.Name, errdefs.ErrNotFound)
	}
	r, err := s.handles.Reserve(spec.ID)
	if err != nil {
		m, gerr := s.handles.Get(spec.ID)
		if gerr != nil {
			return runtime.Instance{}, err
		}
		return m.instance()
	}
	defer r.Release()
	m := &Machine{State: vm, Log: log}
	cctx, cancel := context.WithTimeout(ctx, attachTimeout)
	defer cancel()
	status, err := s.vmm.Attach(cctx, m)
	if err != nil {
		return runtime.Instance{}, fmt.Errorf("recover: %w", err)
	}
	for _, l := range s.cfg.Logs {
		if err := console.Attach(log, filepath.Join(spec.StateDir, l.Name), vm.Pid, l.FDs...); err != nil {
			log.Warn("recover: log not drained; the vmm's output to it is lost", "log", l.Name, "err", err)
		}
	}
	if m.group, err = s.cgroupOf(spec.ID); err != nil {
		// An older agent's VMM, started outside any cgroup: it runs on
		// as it was until it ends or hibernates.
		log.Warn("recover: vmm has no cgroup", "err", err)
	}
	r.Publish(m)
	log.Info("recover: re-adopted running vmm", "vmm", s.cfg.Name, "pid", vm.Pid, "status", status)
	return m.instance()
}

// Snapshot implements runtime.Snapshotter: the VMM writes the VM's state
// (memory and devices) into the state directory and ends (hibernation).
// The disk stays as it is; Restore resumes the sandbox from both, in a
// new VMM, on any network slot. The sandbox stays known (Destroy removes
// it, Stats reports nothing running).
func (s *Shell) Snapshot(ctx context.Context, id string) (runtime.DriverState, error) {
	m, err := s.running(id)
	if err != nil {
		return runtime.DriverState{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, snapshotTimeout)
	defer cancel()
	if err := s.vmm.Snapshot(ctx, m); err != nil {
		return runtime.DriverState{}, fmt.Errorf("snapshot %s: %w", id, err)
	}
	s.vmm.Stop(ctx, m)
	if err := TeardownGuestNet(m.Netns); err != nil {
		m.Log.Warn("snapshot: guest network teardown failed", "err", err)
	}
	if err := s.unconfine(ctx, m); err != nil {
		m.Log.Warn("snapshot: vmm confinement not removed", "err", err)
	}
	m.Process = proc.Process{}
	inst, err := m.instance()
	if err != nil {
		return runtime.DriverState{}, err
	}
	m.Log.Info("sandbox snapshotted", "file", m.Snapshot)
	return inst.State, nil
}

// Restore implements runtime.Snapshotter: it resumes a snapshotted
// sandbox in a new VMM, on the network spec gives it (which may be
// another slot than before). It works for a sandbox this driver
// snapshotted and, after an agent restart, for one whose state says it is
// hibernated.
func (s *Shell) Restore(ctx context.Context, spec runtime.Spec, st runtime.DriverState) (runtime.Instance, error) {
	if spec.Network.Netns == "" || !spec.Network.Address.Addr().Is4() {
		return runtime.Instance{}, fmt.Errorf("no network: %w", errdefs.ErrInvalid)
	}
	m, r, err := s.hibernated(spec, st)
	if err != nil {
		return runtime.Instance{}, err
	}
	if r != nil {
		defer r.Release()
	}
	ctx, cancel := context.WithTimeout(ctx, snapshotTimeout)
	defer cancel()
	if err := SetupGuestNet(spec.Network.Netns, spec.Network.Interface, spec.Network.Address.Addr(), s.cfg.Egress); err != nil {
		return runtime.Instance{}, err
	}
	m.place(spec.Network)
	if err := s.confine(m, runtime.Limits{VCPUs: m.VCPUs, MemoryMB: m.MemoryMB}); err != nil {
		return runtime.Instance{}, fmt.Errorf("restore %s: %w", spec.ID, err)
	}
	if err := s.vmm.Restore(ctx, m); err != nil {
		m.Kill()
		m.Process = proc.Process{}
		_ = s.unconfine(context.WithoutCancel(ctx), m)
		return runtime.Instance{}, fmt.Errorf("restore %s: %w", spec.ID, err)
	}
	inst, err := m.instance()
	if err != nil {
		return runtime.Instance{}, err
	}
	s.handles.Publish(spec.ID, m)
	m.Log.Info("sandbox restored", "pid", m.Pid, "envd", m.EnvdAddr)
	return inst, nil
}

// hibernated returns the Machine of spec's hibernated sandbox: the one
// the shell holds or one made from st, with the reservation of its ID
// for the caller to release.
func (s *Shell) hibernated(spec runtime.Spec, st runtime.DriverState) (*Machine, *handles.Reservation[Machine], error) {
	if m, err := s.handles.Get(spec.ID); err == nil {
		if m.Pid != 0 {
			return nil, nil, fmt.Errorf("sandbox %s is running: %w", spec.ID, errdefs.ErrConflict)
		}
		return m, nil, nil
	}
	r, err := s.handles.Reserve(spec.ID)
	if err != nil {
		return nil, nil, err
	}
	vm, err := s.load(spec, st)
	if err != nil || !exists(vm.Snapshot) {
		r.Release()
		return nil, nil, fmt.Errorf("sandbox %s has no snapshot (%v): %w", spec.ID, err, errdefs.ErrNotFound)
	}
	return &Machine{State: vm, Log: s.log.With("sandbox", spec.ID)}, r, nil
}

func exists(p string) bool {
	if p == "" {
		return false
	}
	_, err := os.Stat(p)
	return err == nil
}
