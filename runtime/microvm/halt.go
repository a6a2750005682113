package microvm

import (
	"context"
	"fmt"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/handles"
	"roost.dev/roost/runtime/proc"
)

// Halt implements runtime.Halter: the VMM ends (the guest is not asked to
// shut down: the manager has it sync its filesystems first) and the VM's
// disk stays as the guest left it. Boot starts the VM afresh from it.
func (s *Shell) Halt(ctx context.Context, id string) (runtime.DriverState, error) {
	m, err := s.handles.Get(id)
	if err != nil {
		return runtime.DriverState{}, err
	}
	if m.Pid == 0 {
		return runtime.DriverState{}, fmt.Errorf("sandbox %s runs no VM: %w", id, errdefs.ErrConflict)
	}
	s.vmm.Stop(ctx, m)
	if err := TeardownGuestNet(m.Netns); err != nil {
		m.Log.Warn("halt: guest network teardown failed", "err", err)
	}
	if err := s.unconfine(ctx, m); err != nil {
		m.Log.Warn("halt: vmm confinement not removed", "err", err)
	}
	m.Process, m.Halted = proc.Process{}, true
	inst, err := m.instance()
	if err != nil {
		return runtime.DriverState{}, err
	}
	m.Log.Info("sandbox halted: its disk is kept")
	return inst.State, nil
}

// Boot implements runtime.Halter: a new VMM boots the halted VM's disk
// with its saved command line, on the network spec gives it.
func (s *Shell) Boot(ctx context.Context, spec runtime.Spec, st runtime.DriverState) (runtime.Instance, error) {
	if spec.Network.Netns == "" || !spec.Network.Address.Addr().Is4() {
		return runtime.Instance{}, fmt.Errorf("no network: %w", errdefs.ErrInvalid)
	}
	m, r, err := s.halted(spec, st)
	if err != nil {
		return runtime.Instance{}, err
	}
	if r != nil {
		defer r.Release()
	}
	if err := SetupGuestNet(spec.Network.Netns, spec.Network.Interface, spec.Network.Address.Addr(), s.cfg.Egress); err != nil {
		return runtime.Instance{}, err
	}
	m.place(spec.Network)
	lim := runtime.Limits{VCPUs: m.VCPUs, MemoryMB: m.MemoryMB}
	if err := s.confine(m, lim); err != nil {
		_ = TeardownGuestNet(spec.Network.Netns)
		return runtime.Instance{}, fmt.Errorf("boot %s: %w", spec.ID, err)
	}
	if err := s.vmm.Boot(ctx, m, spec, lim.Or(DefaultLimits)); err != nil {
		m.Kill()
		m.Process = proc.Process{}
		_ = s.unconfine(context.WithoutCancel(ctx), m)
		_ = TeardownGuestNet(spec.Network.Netns)
		return runtime.Instance{}, fmt.Errorf("boot %s: %w", spec.ID, err)
	}
	m.Halted = false
	inst, err := m.instance()
	if err != nil {
		return runtime.Instance{}, err
	}
	s.handles.Publish(spec.ID, m)
	m.Log.Info("halted sandbox booted", "pid", m.Pid, "envd", m.EnvdAddr)
	return inst, nil
}

// halted returns the Machine of spec's halted sandbox: the one the shell
// holds or one made from st (after an agent restart), with the
// reservation of its ID for the caller to release.
func (s *Shell) halted(spec runtime.Spec, st runtime.DriverState) (*Machine, *handles.Reservation[Machine], error) {
	if m, err := s.handles.Get(spec.ID); err == nil {
		if m.Pid != 0 || !m.Halted {
			return nil, nil, fmt.Errorf("sandbox %s is not halted: %w", spec.ID, errdefs.ErrConflict)
		}
		return m, nil, nil
	}
	r, err := s.handles.Reserve(spec.ID)
	if err != nil {
		return nil, nil, err
	}
	vm, err := s.load(spec, st)
	if err != nil || !vm.Halted {
		r.Release()
		return nil, nil, fmt.Errorf("sandbox %s is not halted (%v): %w", spec.ID, err, errdefs.ErrNotFound)
	}
	return &Machine{State: vm, Log: s.log.With("sandbox", spec.ID)}, r, nil
}

// ExportDisk implements runtime.DiskExporter.
func (s *Shell) ExportDisk(ctx context.Context, spec runtime.Spec, dst string) error {
	if err := s.vmm.ExportDisk(ctx, spec.StateDir, dst); err != nil {
		return fmt.Errorf("export the disk of %s: %w", spec.ID, err)
	}
	return nil
}
