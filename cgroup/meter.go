package cgroup

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"roost.dev/roost/errdefs"
)

// Meter reads a group's CPU time and memory from the control files it
// keeps open, one pread each: what sampling a group every few seconds
// costs, where opening the files again each time would cost several
// times as much. Its owner closes it when the group goes (Delete does not
// know of it; a meter left open keeps the removed group's files, not the
// group, and reads fail). Not safe for concurrent use.
type Meter struct {
	v2 bool
	// cpu is cpuacct.usage (v1) or cpu.stat (v2); mem memory.usage_in_bytes
	// or memory.current, memStat memory.stat, pids pids.current; nil when
	// the host lacks the controller. Without pids, tasks lists them (v1
	// tasks, v2 cgroup.threads).
	cpu, mem, memStat, pids, tasks *os.File
	// cpus and limit are the group's CPU quota as CPUs and its memory
	// limit, as when the meter was opened (roost never changes them).
	cpus  float64
	limit uint64
	buf   []byte
}

// Usage is what a Meter reads.
type Usage struct {
	CPUUsage time.Duration // cumulative CPU time of all tasks
	// CPUs is the group's CPU quota as CPUs; 0 without a quota.
	CPUs        float64
	MemoryBytes uint64 // current usage, page cache included
	MemoryLimit uint64 // 0 when there is no limit
	// MemoryCache is the page cache (file-backed and shared memory)
	// among MemoryBytes; MemoryInactiveFile the part of it on the
	// inactive list, which the kernel reclaims first.
	MemoryCache, MemoryInactiveFile uint64
	Pids                            int
}

// OpenMeter opens the group's control files for reading its use. A
// missing group is errdefs.ErrNotFound.
func (g *Group) OpenMeter() (_ *Meter, err error) {
	if len(g.existing()) == 0 {
		return nil, fmt.Errorf("cgroup %s meter: %w", g.name, errdefs.ErrNotFound)
	}
	m := &Meter{v2: g.h.version == 2, buf: make([]byte, 8<<10)}
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	// open opens dir/file, or leaves it nil when the controller is not
	// there.
	open := func(f **os.File, dir, file string) error {
		if dir == "" {
			return nil
		}
		h, err := os.Open(filepath.Join(dir, file))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil
		case err != nil:
			return fmt.Errorf("cgroup %s meter: %w", g.name, err)
		}
		*f = h
		return nil
	}
	var cpuDir, cpuFile, memDir, memFile, pidsDir string
	if m.v2 {
		cpuDir, cpuFile, memDir, memFile, pidsDir = g.v2, "cpu.stat", g.v2, "memory.current", g.v2
	} else {
		cpuDir, cpuFile, memDir, memFile, pidsDir = g.v1["cpuacct"], "cpuacct.usage", g.v1["memory"], "memory.usage_in_bytes", g.v1["pids"]
	}
	for _, o := range []struct {
		f         **os.File
		dir, file string
	}{{&m.cpu, cpuDir, cpuFile}, {&m.mem, memDir, memFile}, {&m.memStat, memDir, "memory.stat"}, {&m.pids, pidsDir, "pids.current"}} {
		if err := open(o.f, o.dir, o.file); err != nil {
			return nil, err
		}
	}
	if m.pids == nil {
		var err error
		if m.v2 {
			err = open(&m.tasks, g.v2, "cgroup.threads")
		} else if len(g.dirs) > 0 {
			err = open(&m.tasks, g.dirs[0], "tasks")
		}
		if err != nil {
			return nil, err
		}
	}
	if m.cpus, err = g.quota(); err != nil {
		return nil, fmt.Errorf("cgroup %s meter: %w", g.name, err)
	}
	if memDir != "" {
		limitFile := "memory.max"
		if !m.v2 {
			limitFile = "memory.limit_in_bytes"
		}
		switch l, err := readUint(memDir, limitFile); {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return nil, fmt.Errorf("cgroup %s meter: %w", g.name, err)
		case l < unlimitedMemory:
			m.limit = l
		}
	}
	return m, nil
}

// quota reads the group's CPU quota as CPUs (cfs quota over period); 0
// without one.
func (g *Group) quota() (float64, error) {
	var quota, period string
	if g.h.version == 2 {
		b, err := os.ReadFile(filepath.Join(g.v2, "cpu.max"))
		if errors.Is(err, fs.ErrNotExist) {
			return 0, nil
		}
		if err != nil {
			return 0, err
		}
		f := strings.Fields(string(b))
		if len(f) != 2 {
			return 0, fmt.Errorf("parse cpu.max %q", b)
		}
		quota, period = f[0], f[1]
	} else {
		d, ok := g.v1["cpu"]
		if !ok {
			return 0, nil
		}
		q, err := os.ReadFile(filepath.Join(d, "cpu.cfs_quota_us"))
		if err != nil {
			return 0, err
		}
		p, err := os.ReadFile(filepath.Join(d, "cpu.cfs_period_us"))
		if err != nil {
			return 0, err
		}
		quota, period = strings.TrimSpace(string(q)), strings.TrimSpace(string(p))
	}
	if quota == "max" || quota == "-1" {
		return 0, nil
	}
	q, qerr := strconv.ParseFloat(quota, 64)
	p, perr := strconv.ParseFloat(period, 64)
	if qerr != nil || perr != nil || p <= 0 {
		return 0, fmt.Errorf("parse cpu quota %q / period %q", quota, period)
	}
	return q / p, nil
}

// Read reads the group's use now.
func (m *Meter) Read() (Usage, error) {
	u := Usage{CPUs: m.cpus, MemoryLimit: m.limit}
	if m.cpu != nil {
		b, err := m.pread(m.cpu)
		if err != nil {
			return Usage{}, err
		}
		if m.v2 {
			usec, _ := keyed(b, "usage_usec")
			u.CPUUsage = time.Duration(usec) * time.Microsecond
		} else {
			ns, err := parseUint("cpuacct.usage", string(b))
			if err != nil {
				return Usage{}, err
			}
			u.CPUUsage = time.Duration(ns)
		}
	}
	if m.mem != nil {
		b, err := m.pread(m.mem)
		if err != nil {
			return Usage{}, err
		}
		if u.MemoryBytes, err = parseUint("memory usage", string(b)); err != nil {
			return Usage{}, err
		}
	}
	if m.memStat != nil {
		b, err := m.pread(m.memStat)
		if err != nil {
			return Usage{}, err
		}
		// v1's total_ figures count the group's descendants too, as v2's
		// do.
		cache, inactive := "file", "inactive_file"
		if !m.v2 {
			cache, inactive = "total_cache", "total_inactive_file"
		}
		u.MemoryCache, _ = keyed(b, cache)
		u.MemoryInactiveFile, _ = keyed(b, inactive)
	}
	if m.pids != nil {
		b, err := m.pread(m.pids)
		if err != nil {
			return Usage{}, err
		}
		n, err := parseUint("pids.current", string(b))
		if err != nil {
			return Usage{}, err
		}
		u.Pids = int(min(n, math.MaxInt32))
	} else if m.tasks != nil {
		b, err := m.pread(m.tasks)
		if err != nil {
			return Usage{}, err
		}
		u.Pids = bytes.Count(b, []byte{'\n'})
	}
	return u, nil
}

// pread reads f whole from its start, in one pread(2): cgroupfs files
// are generated anew at offset 0, and whole when the buffer holds them.
func (m *Meter) pread(f *os.File) ([]byte, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var n int
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		n, rerr = syscall.Pread(int(fd), m.buf, 0)
		return true
	}); err != nil {
		return nil, err
	}
	switch {
	case rerr != nil:
		return nil, fmt.Errorf("read %s: %w", f.Name(), rerr)
	case n == len(m.buf) && n < maxMeterRead:
		m.buf = make([]byte, 2*len(m.buf)) // a long task list: read it again
		return m.pread(f)
	case n == len(m.buf):
		return nil, fmt.Errorf("read %s: longer than %d bytes", f.Name(), maxMeterRead)
	}
	return m.buf[:n], nil
}

// maxMeterRead bounds a Meter's buffer: a task list of some 100000
// threads.
const maxMeterRead = 1 << 20

// Close closes the meter's files. A second Close does nothing.
func (m *Meter) Close() {
	for _, f := range []**os.File{&m.cpu, &m.mem, &m.memStat, &m.pids, &m.tasks} {
		if *f != nil {
			(*f).Close()
			*f = nil
		}
	}
}

// keyed finds "key value" in a flat keyed file's content, without
// allocating.
func keyed(b []byte, key string) (uint64, bool) {
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if len(line) > len(key) && line[len(key)] == ' ' && string(line[:len(key)]) == key {
			var n uint64
			for _, c := range line[len(key)+1:] {
				if c < '0' || c > '9' {
					return 0, false
				}
				n = n*10 + uint64(c-'0')
			}
			return n, true
		}
	}
	return 0, false
}
