package microvm

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"roost.dev/roost/cgroup"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/handles"
	"roost.dev/roost/runtime/proc"
)

// stateVersion is the version of State's layout in a runtime.DriverState.
// Version 1 is also the layout of the state files (qemu.json,
// firecracker.json) the drivers wrote before the agent kept their state.
const stateVersion = 1

// State is what the Shell saves of one VM: the driver state the agent
// keeps for it.
type State struct {
	ID string `json:"id"`
	// Process is the VMM's; zero while hibernated (snapshot on disk, no
	// process).
	proc.Process
	EnvdAddr string    `json:"envdAddr"`
	Started  time.Time `json:"started"`
	StateDir string    `json:"stateDir"`
	Netns    string    `json:"netns"` // the network namespace the VMM runs in
	MemoryMB int       `json:"memoryMB"`
	VCPUs    int       `json:"vcpus,omitempty"` // 0 in the state of an older agent
	// DiskMB is the size of the sandbox's disk; 0 in the state of an
	// older agent (Stats then reports the image file's size).
	DiskMB int `json:"diskMB,omitempty"`
	// Interface is the sandbox's interface in Netns, whose counters Stats
	// reads; empty in the state of an older agent until Recover.
	Interface string `json:"interface,omitempty"`
	// UID is the host uid (and gid) the VMM runs as; 0 for a VMM an
	// older agent started as root, and while hibernated.
	UID int `json:"uid,omitempty"`
	// Snapshot is the snapshot of a hibernated VM (its device state, and
	// its memory unless Memory is set); Memory its guest memory where that
	// is a file of its own (firecracker), kept after a restore as the
	// base of the next diff snapshot.
	Snapshot string `json:"snapshot,omitempty"`
	Memory   string `json:"memory,omitempty"`
	// Args is the VMM's command line, for VMMs that restore by starting
	// again with it (qemu).
	Args []string `json:"args,omitempty"`
	// Halted: the VMM ended and the disk was kept (runtime.Halter); Boot
	// starts the VM afresh from it.
	Halted bool `json:"halted,omitempty"`
}

// Machine is one sandbox's VM as the Shell holds it: its saved State and,
// while this agent runs its VMM, the channel closed when the VMM exits.
type Machine struct {
	State
	Log *slog.Logger

	// CtlMu serialises sessions on the VMM's control socket (QEMU
	// serves one QMP client at a time).
	CtlMu sync.Mutex

	exited <-chan struct{} // closed when the VMM exits; nil for re-adopted VMs
	group  *cgroup.Group   // the VMM's cgroup; nil until confined or re-adopted
}

// Start starts the VMM, cmd, from a thread inside the sandbox's network
// namespace, moves it into its cgroup, and records it. The VMM is moved
// as it starts, before it has mapped or touched guest memory; its
// children (a jailer's VMM, QEMU's threads) are born in the group.
func (m *Machine) Start(cmd *exec.Cmd) error {
	if m.group == nil {
		return fmt.Errorf("sandbox %s: vmm not confined (no cgroup)", m.ID)
	}
	p, exited, err := proc.Start(m.Netns, cmd)
	if err != nil {
		return err
	}
	m.Process, m.exited, m.Started = p, exited, time.Now().UTC()
	if err := m.group.AddProc(p.Pid); err != nil {
		m.Kill()
		return fmt.Errorf("vmm cgroup: %w", err)
	}
	return nil
}

// Running reports whether the VMM is up.
func (m *Machine) Running() bool { return m.Process.Running(m.exited) }

// WaitExit waits up to d, or until ctx ends, for the VMM to exit, and
// reports whether it did.
func (m *Machine) WaitExit(ctx context.Context, d time.Duration) bool {
	return m.Process.WaitExit(ctx, m.exited, d)
}

// Kill ends the VMM at once and waits for it to go.
func (m *Machine) Kill() { m.Process.Kill(m.exited) }

// UntilExit is ctx bounded by d that also ends when the VMM exits: for
// waiting on its control socket, which a VMM that died never opens.
func (m *Machine) UntilExit(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return proc.UntilExit(ctx, d, m.exited)
}

// instance is the sandbox as the runtime contract reports it, with the
// state the agent keeps.
func (m *Machine) instance() (runtime.Instance, error) {
	st, err := handles.Encode(stateVersion, m.State)
	if err != nil {
		return runtime.Instance{}, err
	}
	addr, _ := netip.ParseAddrPort(m.EnvdAddr)
	return runtime.Instance{ID: m.ID, Envd: addr, Pid: m.Pid, Started: m.Started, State: st}, nil
}

// stats is the VMM's resource use as the sandbox's: the guest's memory
// is its limit, the VMM's resident memory what it uses (its working set:
// the guest's page cache is inside it), the bytes disk (the sandbox's
// disk image) takes on the host what its disk uses, and the counters of
// the sandbox's interface in its namespace its network's. A hibernated
// VM uses no CPU or memory.
func (m *Machine) stats(disk string) (runtime.Stats, error) {
	st := runtime.Stats{MemoryLimit: uint64(m.MemoryMB) << 20, VCPUs: m.VCPUs, DiskTotal: uint64(m.DiskMB) << 20}
	fi, err := os.Stat(disk)
	if err != nil {
		return st, fmt.Errorf("sandbox %s disk: %w", m.ID, err)
	}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.DiskUsed = uint64(sys.Blocks) * 512
	}
	if st.DiskTotal == 0 {
		st.DiskTotal = uint64(fi.Size())
	}
	if m.Pid == 0 {
		return st, nil
	}
	u, err := m.Process.Usage()
	if err != nil {
		return st, fmt.Errorf("sandbox %s: %w", m.ID, err)
	}
	st.CPUUsage, st.MemoryBytes, st.MemoryWorkingSet, st.Pids = u.CPU, u.RSS, u.RSS, u.Threads
	if m.Interface != "" {
		if st.NetRxBytes, st.NetTxBytes, err = proc.NetCounters(m.Pid, m.Interface); err != nil {
			return st, fmt.Errorf("sandbox %s: %w", m.ID, err)
		}
	}
	return st, nil
}
