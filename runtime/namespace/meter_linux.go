package namespace

import (
	"fmt"
	"math"

	"golang.org/x/sys/unix"

	"roost.dev/roost/cgroup"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/proc"
)

// meter reads a running sandbox's use for Stats, from files it keeps
// open (its cgroup's, and its network namespace's counters): the agent
// reads every sandbox's every few seconds, and opening them each time
// would cost several times as much. Its disk is read by statfs, which
// holds nothing open that would keep the disk mounted.
type meter struct {
	group *cgroup.Meter
	net   *proc.NetDev
	disk  string // where the sandbox's disk is mounted
}

// stats reads the sandbox's use through its meter, opening it the first
// time.
func (h *handle) stats() (runtime.Stats, error) {
	h.meterMu.Lock()
	defer h.meterMu.Unlock()
	if h.meter == nil {
		m, err := h.openMeter()
		if err != nil {
			return runtime.Stats{}, fmt.Errorf("sandbox %s stats: %w", h.rec.ID, err)
		}
		h.meter = m
	}
	st, err := h.meter.read()
	if err != nil {
		return runtime.Stats{}, fmt.Errorf("sandbox %s stats: %w", h.rec.ID, err)
	}
	return st, nil
}

func (h *handle) openMeter() (*meter, error) {
	g, err := h.group.OpenMeter()
	if err != nil {
		return nil, err
	}
	n, err := proc.OpenNetDev(h.rec.Pid, "") // the namespace's one interface
	if err != nil {
		g.Close()
		return nil, err
	}
	_, disk, _ := paths(h.rec.StateDir)
	return &meter{group: g, net: n, disk: disk}, nil
}

// closeMeter closes the handle's meter, if it has one: before its cgroup
// is deleted, and when the handle goes.
func (h *handle) closeMeter() {
	h.meterMu.Lock()
	defer h.meterMu.Unlock()
	if h.meter != nil {
		h.meter.group.Close()
		h.meter.net.Close()
		h.meter = nil
	}
}

func (m *meter) read() (runtime.Stats, error) {
	u, err := m.group.Read()
	if err != nil {
		return runtime.Stats{}, err
	}
	st := runtime.Stats{
		CPUUsage: u.CPUUsage, VCPUs: int(math.Ceil(u.CPUs)),
		MemoryBytes: u.MemoryBytes, MemoryLimit: u.MemoryLimit, MemoryCache: u.MemoryCache,
		MemoryWorkingSet: u.MemoryBytes - min(u.MemoryInactiveFile, u.MemoryBytes),
		Pids:             u.Pids,
	}
	if st.NetRxBytes, st.NetTxBytes, err = m.net.Read(); err != nil {
		return runtime.Stats{}, err
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(m.disk, &fs); err != nil {
		return runtime.Stats{}, fmt.Errorf("statfs %s: %w", m.disk, err)
	}
	st.DiskTotal = fs.Blocks * uint64(fs.Bsize)
	st.DiskUsed = (fs.Blocks - fs.Bfree) * uint64(fs.Bsize)
	return st, nil
}
