package microvm

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"roost.dev/roost/cgroup"
	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/handles"
	"roost.dev/roost/wire"
)

// NamePrefix marks roost's VMM processes on their command line (QEMU's
// -name roost-ID, Firecracker's --id roost-ID), for Prune.
const NamePrefix = "roost-"

// DefaultLimits fill the limits a spec leaves zero: 1 vCPU, 512 MiB of
// memory, a 2 GiB disk.
var DefaultLimits = runtime.Limits{VCPUs: 1, MemoryMB: 512, DiskMB: 2048}

// Config describes one VM driver to the Shell.
type Config struct {
	// Name is the driver's name, for messages ("qemu").
	Name string
	VMM  VMM
	// Egress is the limit the guest network applies to what a guest
	// sends; zero where the VMM limits egress itself.
	Egress RateLimit
	// Exe and Flag find the VMMs of roost sandboxes for Prune: processes
	// whose executable's name contains Exe and whose command line has
	// Flag followed by NamePrefix and a sandbox ID.
	Exe, Flag string
	// LegacyState is the name of the state file the driver wrote in a
	// sandbox's state directory before the agent kept its state: read
	// for a sandbox an older agent recorded, removed by Destroy.
	LegacyState string
	// Logs are the logs in a sandbox's state directory that the VMM
	// writes through a console pipe (package console), each with the
	// VMM's file descriptors that hold the pipe, for Recover to drain it
	// again.
	Logs []Log
	// UIDDir is where the driver's VMM uids are claimed (see uidPool),
	// and UIDBase the first of them: drivers that may run side by side
	// take disjoint ranges.
	UIDDir  string
	UIDBase int
	// OverheadMB is what the VMM's cgroup allows above the guest's
	// memory, for the VMM itself.
	OverheadMB int
}

// Log is one log a VMM writes through a console pipe.
type Log struct {
	Name string // in the sandbox's state directory
	FDs  []int  // the VMM's descriptors holding the pipe's write end
}

// Shell is what both VM drivers are around their VMM: the table of
// sandboxes, the guest network, the VMM process's lifetime, saved state,
// recovery after an agent restart, and the steps of create, destroy,
// snapshot and restore in their order, with the unwinding of a failed
// create. A driver embeds it and adds Name, Capabilities and Probe; its
// methods implement runtime.Runtime's others, runtime.Pauser and
// runtime.Snapshotter.
type Shell struct {
	cfg     Config
	vmm     VMM
	log     *slog.Logger
	handles handles.Table[Machine]

	uids      uidPool
	cgroups   *cgroup.Hierarchy // nil when the host has none usable
	cgroupErr error             // why cgroups is nil
}

// NewShell returns the shell of the driver cfg describes.
func NewShell(cfg Config, log *slog.Logger) *Shell {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h, err := cgroup.Detect()
	return &Shell{cfg: cfg, vmm: cfg.VMM, log: log, cgroups: h, cgroupErr: err,
		uids: uidPool{dir: cfg.UIDDir, base: cmp.Or(cfg.UIDBase, UIDBase)}}
}

// validate checks what every VM needs of a spec, then what the VMM needs.
func (s *Shell) validate(spec runtime.Spec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	if spec.Network.Netns == "" || spec.Network.Interface == "" || !spec.Network.Address.Addr().Is4() {
		return fmt.Errorf("no network: %w", errdefs.ErrInvalid)
	}
	return s.vmm.Validate(spec)
}

// Create implements runtime.Runtime.
func (s *Shell) Create(ctx context.Context, spec runtime.Spec) (runtime.Instance, error) {
	if err := s.validate(spec); err != nil {
		return runtime.Instance{}, err
	}
	lim := spec.Limits.Or(DefaultLimits)
	return s.start(ctx, spec, lim, func(m *Machine) error {
		return s.vmm.Prepare(ctx, m, spec, lim)
	}, func(m *Machine) error {
		return s.vmm.Boot(ctx, m, spec, lim)
	})
}

// start brings up a new VM for spec with lim: prepare readies its disk
// and the VMM's fields, then the guest network and the VMM's confinement
// are set up, and run starts the VMM. A failure unwinds what was done.
func (s *Shell) start(ctx context.Context, spec runtime.Spec, lim runtime.Limits, prepare, run func(*Machine) error) (runtime.Instance, error) {
	r, err := s.handles.Reserve(spec.ID)
	if err != nil {
		return runtime.Instance{}, err
	}
	defer r.Release() // a failed start unwinds
	m := s.machine(spec, State{ID: spec.ID, StateDir: spec.StateDir, MemoryMB: lim.MemoryMB, VCPUs: lim.VCPUs, DiskMB: lim.DiskMB})
	began := time.Now()
	if err := os.MkdirAll(spec.StateDir, 0o700); err != nil {
		return runtime.Instance{}, fmt.Errorf("state dir: %w", err)
	}
	r.OnFail(func() { _ = RemoveFiles(s.vmm.Files(spec.StateDir)...) })
	if err := prepare(m); err != nil {
		return runtime.Instance{}, err
	}
	r.OnFail(func() { _ = TeardownGuestNet(spec.Network.Netns) })
	if err := SetupGuestNet(spec.Network.Netns, spec.Network.Interface, spec.Network.Address.Addr(), s.cfg.Egress); err != nil {
		return runtime.Instance{}, err
	}
	if err := s.confine(m, lim); err != nil {
		return runtime.Instance{}, err
	}
	r.OnFail(func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = s.unconfine(cctx, m)
	})
	prepared := time.Now()
	r.OnFail(m.Kill)
	if err := run(m); err != nil {
		return runtime.Instance{}, err
	}
	inst, err := m.instance()
	if err != nil {
		return runtime.Instance{}, err
	}
	r.Publish(m)
	m.Log.Info("sandbox started", "pid", m.Pid, "envd", m.EnvdAddr, "prepare", prepared.Sub(began), "run", time.Since(prepared))
	return inst, nil
}

// machine is a Machine for spec from st, on spec's network.
func (s *Shell) machine(spec runtime.Spec, st State) *Machine {
	st.place(spec.Network)
	return &Machine{State: st, Log: s.log.With("sandbox", spec.ID)}
}

// place puts the VM on nw: its VMM runs in nw's namespace, its envd
// answers on nw's address.
func (st *State) place(nw runtime.Network) {
	st.Netns, st.Interface = nw.Netns, nw.Interface
	st.EnvdAddr = netip.AddrPortFrom(nw.Address.Addr(), wire.EnvdPort).String()
}

// files are what Destroy removes of a VM (the manager removes the
// directory).
func (s *Shell) files(stateDir string) []string {
	return append(s.vmm.Files(stateDir), filepath.Join(stateDir, s.cfg.LegacyState))
}

// Destroy implements runtime.Runtime.
func (s *Shell) Destroy(ctx context.Context, id string) error {
	m, err := s.handles.Get(id)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	if m.Pid != 0 {
		s.vmm.Stop(cctx, m)
	}
	if m.Netns != "" {
		err = TeardownGuestNet(m.Netns)
	}
	err = errors.Join(err, s.unconfine(cctx, m), RemoveFiles(s.files(m.StateDir)...))
	s.handles.Delete(id)
	m.Log.Info("sandbox destroyed")
	return err
}

// Prune implements runtime.Runtime: it kills the VMMs of roost sandboxes
// neither in keep nor known.
func (s *Shell) Prune(ctx context.Context, keep []string) error {
	kept := func(id string) bool { return slices.Contains(keep, id) || s.handles.Known(id) }
	err := PruneVMMs(s.cfg.Exe, s.cfg.Flag, NamePrefix, keep, s.handles.Known, s.log)
	return errors.Join(err, s.pruneConfinement(ctx, kept))
}

// Stats implements runtime.Runtime: the VMM's CPU time and resident
// memory (which includes the guest memory the guest has touched).
func (s *Shell) Stats(ctx context.Context, id string) (runtime.Stats, error) {
	m, err := s.handles.Get(id)
	if err != nil {
		return runtime.Stats{}, err
	}
	return m.stats(s.vmm.Disk(m.StateDir))
}

// Pause implements runtime.Pauser: the vCPUs stop, memory stays.
func (s *Shell) Pause(ctx context.Context, id string) error {
	m, err := s.running(id)
	if err != nil {
		return err
	}
	return s.vmm.Pause(ctx, m)
}

// Resume implements runtime.Pauser.
func (s *Shell) Resume(ctx context.Context, id string) error {
	m, err := s.running(id)
	if err != nil {
		return err
	}
	return s.vmm.Resume(ctx, m)
}

// running returns the Machine of id, whose VMM must run.
func (s *Shell) running(id string) (*Machine, error) {
	m, err := s.handles.Get(id)
	if err != nil {
		return nil, err
	}
	if !m.Running() {
		return nil, fmt.Errorf("sandbox %s has no running vm: %w", id, errdefs.ErrConflict)
	}
	return m, nil
}
