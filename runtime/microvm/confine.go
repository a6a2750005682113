package microvm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"roost.dev/roost/cgroup"
	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
)

// A VMM is the host process a guest attacks first: it parses what the
// guest puts in virtio rings and MMIO registers. So it runs as little as
// the host can make it (as Firecracker's jailer and libvirt's qemu user
// do): as a host uid and gid of its own, one per sandbox, so that a VMM
// taken over by its guest can neither signal nor ptrace another
// sandbox's VMM nor open another's files, and in a cgroup of its own
// with the sandbox's limits, so that it cannot take the host's memory,
// CPU or pids. The files it needs are opened by the agent and passed to
// it (a driver's launch).

// The VMM uids: UIDBase up to UIDCount of them, below the namespace
// runtime's ID ranges (from 2^30) and far above the uids of host users
// and subordinate ranges (/etc/subuid starts at 100000). Each is claimed
// for one sandbox while its VMM runs.
const (
	UIDBase  = 1 << 29
	UIDCount = 1 << 20
)

// cgroupParent is the parent of the VMMs' cgroups ("roost-vm/<id>"):
// apart from the namespace runtime's "roost/<id>", which that driver's
// Prune would take for its own strays.
const cgroupParent = "roost-vm"

// cgroupName is the cgroup of the VMM of sandbox id.
func cgroupName(id string) string { return cgroupParent + "/" + id }

// uidPool hands out VMM uids. A uid is claimed by a file in dir named for
// it and holding the sandbox's ID, made with O_EXCL: the claim outlives
// the agent, so a restarted agent never gives a running VMM's uid to
// another sandbox.
type uidPool struct {
	dir  string
	base int
}

// claim claims the lowest free uid for the sandbox id.
func (p uidPool) claim(id string) (int, error) {
	if p.dir == "" {
		return 0, errors.New("vmm uids: no directory configured")
	}
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return 0, fmt.Errorf("vmm uids: %w", err)
	}
	for n := range UIDCount {
		f, err := os.OpenFile(p.path(p.base+n), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("claim vmm uid: %w", err)
		}
		_, err = f.WriteString(id)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(p.path(p.base + n))
			return 0, fmt.Errorf("claim vmm uid: %w", err)
		}
		return p.base + n, nil
	}
	return 0, fmt.Errorf("no free vmm uid: %w", errdefs.ErrUnavailable)
}

// release gives uid back, if the sandbox id holds it.
func (p uidPool) release(uid int, id string) error {
	if uid == 0 {
		return nil // a VMM an older agent started as root
	}
	if owner, err := os.ReadFile(p.path(uid)); err != nil || string(owner) != id {
		return nil // never claimed, or given to another sandbox since
	}
	if err := os.Remove(p.path(uid)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("release vmm uid: %w", err)
	}
	return nil
}

// prune releases the claims of sandboxes for which keep is false.
func (p uidPool) prune(keep func(id string) bool) error {
	ents, err := os.ReadDir(p.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("vmm uids: %w", err)
	}
	var errs []error
	for _, e := range ents {
		uid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		owner, err := os.ReadFile(p.path(uid))
		if err != nil || keep(strings.TrimSpace(string(owner))) {
			continue
		}
		errs = append(errs, p.release(uid, string(owner)))
	}
	return errors.Join(errs...)
}

func (p uidPool) path(uid int) string { return filepath.Join(p.dir, strconv.Itoa(uid)) }

// VMMLimits are the cgroup limits of the VMM of a VM with lim: its guest's
// memory and the VMM's own overheadMB (device emulation, I/O buffers,
// under emulation the translated code), its vCPUs and half a CPU for its
// main loop and I/O threads, and tasks for the vCPU threads and the I/O
// worker pool (QEMU's grows to 64 threads).
func VMMLimits(lim runtime.Limits, overheadMB int) cgroup.Limits {
	l := cgroup.Limits{Pids: int64(lim.VCPUs) + 128}
	if lim.MemoryMB > 0 {
		l.MemoryBytes = int64(lim.MemoryMB+overheadMB) << 20
	}
	if lim.VCPUs > 0 {
		l.CPUs = float64(lim.VCPUs) + 0.5
	}
	return l
}

// confine gives m a uid of its own and a cgroup with the limits of a VM
// with lim, for the VMM it is about to start.
func (s *Shell) confine(m *Machine, lim runtime.Limits) (err error) {
	if s.cgroups == nil {
		return fmt.Errorf("vmm cgroup: %w", s.cgroupErr)
	}
	uid, err := s.uids.claim(m.ID)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = s.uids.release(uid, m.ID)
		}
	}()
	name := cgroupName(m.ID)
	if old, lerr := s.cgroups.Load(name); lerr == nil {
		// Left by a crash between creating it and recording the VM; its
		// VMM, if any, is a stray Prune kills.
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := old.Delete(cctx)
		cancel()
		if err != nil {
			return fmt.Errorf("vmm cgroup: %w", err)
		}
	}
	g, err := s.cgroups.Create(name, VMMLimits(lim, s.cfg.OverheadMB))
	if err != nil {
		return fmt.Errorf("vmm cgroup: %w", err)
	}
	m.UID, m.group = uid, g
	return nil
}

// unconfine removes m's cgroup, whose VMM is gone, and gives its uid back.
func (s *Shell) unconfine(ctx context.Context, m *Machine) error {
	var errs []error
	if m.group == nil {
		// Re-adopted, hibernated or never confined: find it by name.
		m.group, _ = s.cgroupOf(m.ID)
	}
	if m.group != nil {
		errs = append(errs, m.group.Delete(ctx))
	}
	errs = append(errs, s.uids.release(m.UID, m.ID))
	m.UID, m.group = 0, nil
	return errors.Join(errs...)
}

// cgroupOf loads the cgroup of sandbox id's VMM, for a VM re-adopted after
// an agent restart.
func (s *Shell) cgroupOf(id string) (*cgroup.Group, error) {
	if s.cgroups == nil {
		return nil, s.cgroupErr
	}
	return s.cgroups.Load(cgroupName(id))
}

// pruneConfinement removes the cgroups and uid claims of VMs neither in
// keep nor known, once their VMMs are gone.
func (s *Shell) pruneConfinement(ctx context.Context, keep func(id string) bool) error {
	errs := []error{s.uids.prune(keep)}
	if s.cgroups == nil {
		return errors.Join(errs...)
	}
	groups, err := s.cgroups.List(cgroupParent)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, name := range groups {
		id := strings.TrimPrefix(name, cgroupParent+"/")
		if keep(id) {
			continue
		}
		g, err := s.cgroups.Load(name)
		if err != nil {
			continue
		}
		s.log.Info("prune: removing stray vmm cgroup", "sandbox", id)
		errs = append(errs, g.Delete(ctx))
	}
	return errors.Join(errs...)
}

// MissingConfinement says what this host lacks to confine VMMs, for a
// driver's Probe: usable cgroups.
func (s *Shell) MissingConfinement() []string {
	if s.cgroups == nil {
		return []string{fmt.Sprintf("no cgroups to confine vmms in: %v", s.cgroupErr)}
	}
	return nil
}

// Credential is what m's VMM runs as: its own uid, the gid of the same
// number, and no supplementary groups but groups (the kvm group, where
// /dev/kvm needs it). Zero (root) for a VM never confined.
func (m *Machine) Credential(groups ...uint32) *syscall.Credential {
	if m.UID == 0 {
		return nil
	}
	return &syscall.Credential{Uid: uint32(m.UID), Gid: uint32(m.UID), Groups: groups}
}
