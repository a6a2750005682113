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
	DiskUsed   uint64  `json:"disk_used"`
	DiskTotal  uint64  `json:"disk_total"`
}

// Sampler produces Reports. Safe for concurrent use.
type Sampler struct {
	proc string // procfs root, "/proc" unless a test says otherwise
	disk string // the filesystem whose usage is reported

	mu   sync.Mutex // guards last
	last cpuTimes
}

// NewSampler reports on procfs at proc and the filesystem holding disk.
func NewSampler(proc, disk string) *Sampler {
	s := &Sampler{proc: proc, disk: disk}
	s.last, _ = s.readCPU()
	return s
}

type cpuTimes struct{ busy, total uint64 }

// Sample takes a report. CPU use is measured since the previous Sample, or
// over a short window when that was too recent to mean anything.
func (s *Sampler) Sample() (Report, error) {
	r := Report{Timestamp: time.Now().Unix(), CPUCount: runtime.NumCPU()}
	pct, err := s.cpuPercent()
	if err != nil {
		return Report{}, err
	}
	r.CPUUsedPct = math.Round(pct*100) / 100
	if r.MemTotal, r.MemUsed, err = s.memory(); err != nil {
		return Report{}, err
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
	if now.total-s.last.total < 10 { // under ~100 ms of ticks: sample a window
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

// readCPU sums the aggregate "cpu" line of /proc/stat.
func (s *Sampler) readCPU() (cpuTimes, error) {
	b, err := os.ReadFile(filepath.Join(s.proc, "stat"))
	if err != nil {
		return cpuTimes{}, fmt.Errorf("read cpu times: %w", err)
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	fields := strings.Fields(string(line))
	if len(fields) < 5 || fields[0] != "cpu" {
		return cpuTimes{}, errors.New("read cpu times: unexpected /proc/stat format")
	}
	var t cpuTimes
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
func (s *Sampler) memory() (total, used uint64, err error) {
	f, err := os.Open(filepath.Join(s.proc, "meminfo"))
	if err != nil {
		return 0, 0, fmt.Errorf("read meminfo: %w", err)
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
		}
	}
	if total == 0 {
		return 0, 0, errors.New("read meminfo: no MemTotal")
	}
	return total, total - min(avail, total), nil
}
