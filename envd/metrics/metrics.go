package metrics

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Report is the JSON body of GET /metrics. Sizes are bytes.
type Report struct {
	Timestamp  int64   `json:"ts"`
	CPUCount   int     `json:"cpu_count"`
	CPUUsedPct float64 `json:"cpu_used_pct"`
	MemTotal   uint64  `json:"mem_total"`
	MemUsed    uint64  `json:"mem_used"`
	// MemCache is the page cache: the sandbox's cgroup's file memory, or
	// the machine's Cached and Buffers.
	MemCache  uint64 `json:"mem_cache"`
	DiskUsed  uint64 `json:"disk_used"`
	DiskTotal uint64 `json:"disk_total"`
}

// Sampler produces Reports. Safe for concurrent use.
type Sampler struct {
	proc string     // procfs root, "/proc" unless a test says otherwise
	cg   cgroupView // the cgroup envd runs in
	cpus int        // CPUs the report counts: the machine's, or the cgroup's quota
	disk string     // the filesystem whose usage is reported

	start time.Time // the origin of a cgroup's CPU time totals
	mu    sync.Mutex
	last  cpuTimes // guarded by mu
}

// NewSampler reports on procfs at proc, the cgroup envd runs in below the
// cgroupfs at cgroupRoot (its limits, where it has any, win over the
// machine's), and the filesystem holding disk.
func NewSampler(proc, cgroupRoot, disk string) *Sampler {
	s := &Sampler{proc: proc, cg: findCgroup(proc, cgroupRoot), cpus: runtime.NumCPU(), disk: disk, start: time.Now()}
	if n, ok := s.cg.cpus(); ok {
		s.cpus = max(1, min(s.cpus, int(n)))
	}
	s.last, _ = s.readCPU()
	return s
}

// cpuTimes are busy and total CPU time in one unit; window is how much
// total makes a measurement worth taking.
type cpuTimes struct{ busy, total, window uint64 }

// Sample takes a report. CPU use is measured since the previous Sample, or
// over a short window when that was too recent to mean anything.
func (s *Sampler) Sample() (Report, error) {
	r := Report{Timestamp: time.Now().Unix(), CPUCount: s.cpus}
	pct, err := s.cpuPercent()
	if err != nil {
		return Report{}, err
	}
	r.CPUUsedPct = math.Round(min(pct, 100)*100) / 100
	if r.MemTotal, r.MemUsed, r.MemCache, err = s.memory(); err != nil {
		return Report{}, err
	}
	if c, ok := s.cg.cache(); ok {
		r.MemCache = c
	}
	if limit, used, ok := s.cg.memory(); ok && limit < r.MemTotal {
		r.MemTotal, r.MemUsed = limit, min(used, limit)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.disk, &st); err != nil {
		return Report{}, fmt.Errorf("statfs %s: %w", s.disk, err)
	}
	bs := uint64(st.Bsize)
	r.DiskTotal = st.Blocks * bs
	r.DiskUsed = (st.Blocks - st.Bfree) * bs
	return r, nil
}

func (s *Sampler) cpuPercent() (float64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now, err := s.readCPU()
	if err != nil {
		return 0, err
	}
	if now.total-s.last.total < now.window { // too short: sample a window
		s.last = now
		time.Sleep(100 * time.Millisecond)
		if now, err = s.readCPU(); err != nil {
			return 0, err
		}
	}
	busy, total := now.busy-s.last.busy, now.total-s.last.total
	s.last = now
	if total == 0 {
		return 0, nil
	}
	return 100 * float64(busy) / float64(total), nil
}

// readCPU reads the cgroup's CPU time against the wall-clock time of its
// CPUs (nanoseconds), or else the machine's from /proc/stat.
func (s *Sampler) readCPU() (cpuTimes, error) {
	if used, ok := s.cg.cpuUsage(); ok {
		cpus := uint64(s.cpus)
		return cpuTimes{busy: used, total: uint64(time.Since(s.start).Nanoseconds()) * cpus, window: 100 * uint64(time.Millisecond) * cpus}, nil
	}
	return s.readProcStat()
}

// readProcStat sums the aggregate "cpu" line of /proc/stat, in ticks.
func (s *Sampler) readProcStat() (cpuTimes, error) {
	b, err := os.ReadFile(filepath.Join(s.proc, "stat"))
	if err != nil {
		return cpuTimes{}, fmt.Errorf("read cpu times: %w", err)
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	fields := strings.Fields(string(line))
	if len(fields) < 5 || fields[0] != "cpu" {
		return cpuTimes{}, errors.New("read cpu times: unexpected /proc/stat format")
	}
	t := cpuTimes{window: 10} // ticks: about 100 ms
	for i, f := range fields[1:] {
		v, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return cpuTimes{}, fmt.Errorf("read cpu times: field %d: %w", i+1, err)
		}
		t.total += v
		if i != 3 && i != 4 { // idle and iowait are not busy
			t.busy += v
		}
	}
	return t, nil
}

// memory returns total and used bytes; used excludes reclaimable cache.
func (s *Sampler) memory() (total, used, cache uint64, err error) {
	f, err := os.Open(filepath.Join(s.proc, "meminfo"))
	if err != nil {
		return 0, 0, 0, fmt.Errorf("read meminfo: %w", err)
	}
	defer f.Close()
	var avail uint64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "MemTotal":
			total = n << 10
		case "MemAvailable":
			avail = n << 10
		case "Cached", "Buffers":
			cache += n << 10
		}
	}
	if total == 0 {
		return 0, 0, 0, errors.New("read meminfo: no MemTotal")
	}
	return total, total - min(avail, total), cache, nil
}
