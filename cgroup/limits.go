package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"roost.dev/roost/errdefs"
)

const (
	// cfsPeriod is the CFS bandwidth period in microseconds; CPUs scale
	// the quota against it.
	cfsPeriod = 100_000
	// minQuota is the smallest CFS quota the kernel accepts (1 ms).
	minQuota = 1_000
	// maxCPUs keeps the quota far below the kernel's ceiling (about 2^44 µs).
	maxCPUs = 1 << 20
	// maxPids is the kernel's PID_MAX_LIMIT; pids.max accepts no more.
	maxPids = 4 << 20
	// unlimitedMemory is the smallest v1 memory limit that means "none"
	// (the kernel reports PAGE_COUNTER_MAX pages, just under 2^63 bytes).
	unlimitedMemory = 1 << 62
)

func (l Limits) validate() error {
	switch {
	case math.IsNaN(l.CPUs) || l.CPUs < 0 || l.CPUs > maxCPUs:
		return fmt.Errorf("cpus %v: not between 0 and %d: %w", l.CPUs, maxCPUs, errdefs.ErrInvalid)
	case l.CPUs > 0 && cpuQuota(l.CPUs) < minQuota:
		return fmt.Errorf("cpus %v: below the minimum %v: %w", l.CPUs, float64(minQuota)/cfsPeriod, errdefs.ErrInvalid)
	case l.MemoryBytes < 0:
		return fmt.Errorf("memory %d bytes: negative: %w", l.MemoryBytes, errdefs.ErrInvalid)
	case l.Pids < 0 || l.Pids > maxPids:
		return fmt.Errorf("pids %d: not between 0 and %d: %w", l.Pids, maxPids, errdefs.ErrInvalid)
	}
	return nil
}

// cpuQuota is the CFS quota in microseconds per cfsPeriod for cpus.
func cpuQuota(cpus float64) int64 {
	return int64(math.Round(cpus * cfsPeriod))
}

// setLimits applies the non-zero limits of l to a new group, whose
// controllers start unlimited.
func (g *Group) setLimits(l Limits) error {
	if g.h.version == 2 {
		return g.setLimitsV2(l)
	}
	return g.setLimitsV1(l)
}

func (g *Group) setLimitsV1(l Limits) error {
	if l.MemoryBytes > 0 {
		d, err := g.v1Dir("memory", "memory")
		if err != nil {
			return err
		}
		v := strconv.FormatInt(l.MemoryBytes, 10)
		if err := writeFile(d, "memory.limit_in_bytes", v); err != nil {
			return fmt.Errorf("set memory limit: %w", err)
		}
		// memsw bounds memory plus swap and must not be below the memory
		// limit, hence second; equal to it, the group cannot swap. It is
		// absent when the kernel does not account swap.
		if err := writeFile(d, "memory.memsw.limit_in_bytes", v); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("set memory+swap limit: %w", err)
		}
	}
	if l.CPUs > 0 {
		d, err := g.v1Dir("cpu", "cpu")
		if err != nil {
			return err
		}
		if err := writeFile(d, "cpu.cfs_period_us", strconv.Itoa(cfsPeriod)); err != nil {
			return fmt.Errorf("set cpu period: %w", err)
		}
		if err := writeFile(d, "cpu.cfs_quota_us", strconv.FormatInt(cpuQuota(l.CPUs), 10)); err != nil {
			return fmt.Errorf("set cpu quota: %w", err)
		}
	}
	if l.Pids > 0 {
		d, err := g.v1Dir("pids", "pids")
		if err != nil {
			return err
		}
		if err := writeFile(d, "pids.max", strconv.FormatInt(l.Pids, 10)); err != nil {
			return fmt.Errorf("set pids limit: %w", err)
		}
	}
	return nil
}

// v1Dir is the group's directory for a v1 controller, or ErrUnsupported
// naming it when the host does not mount it.
func (g *Group) v1Dir(controller, limit string) (string, error) {
	d, ok := g.v1[controller]
	if !ok {
		return "", fmt.Errorf("%s limit: no cgroup v1 %s controller is mounted: %w", limit, controller, errdefs.ErrUnsupported)
	}
	return d, nil
}

func (g *Group) setLimitsV2(l Limits) error {
	if l.MemoryBytes > 0 {
		if err := g.writeV2("memory", "memory.max", strconv.FormatInt(l.MemoryBytes, 10)); err != nil {
			return err
		}
		// memory.swap.max is swap alone; 0 makes MemoryBytes the whole
		// footprint, as memsw does on v1, so a hog is OOM-killed at its
		// limit instead of thrashing in swap. Absent without swap
		// accounting, where there is nothing to limit.
		if err := writeFile(g.v2, "memory.swap.max", "0"); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("set swap limit: %w", err)
		}
	}
	if l.CPUs > 0 {
		v := fmt.Sprintf("%d %d", cpuQuota(l.CPUs), cfsPeriod)
		if err := g.writeV2("cpu", "cpu.max", v); err != nil {
			return err
		}
	}
	if l.Pids > 0 {
		if err := g.writeV2("pids", "pids.max", strconv.FormatInt(l.Pids, 10)); err != nil {
			return err
		}
	}
	return nil
}

// writeV2 writes a v2 limit file, failing with ErrUnsupported naming the
// controller when the file is missing because the controller is not
// enabled for the group.
func (g *Group) writeV2(controller, file, value string) error {
	err := writeFile(g.v2, file, value)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("set %s: the cgroup v2 %s controller is not available to %s: %w",
			file, controller, g.v2, errdefs.ErrUnsupported)
	}
	if err != nil {
		return fmt.Errorf("set %s: %w", file, err)
	}
	return nil
}

// Stats reports the group's resource use. Figures whose controller the
// host lacks are zero; a missing group is errdefs.ErrNotFound.
func (g *Group) Stats() (Stats, error) {
	if len(g.existing()) == 0 {
		return Stats{}, fmt.Errorf("cgroup %s stats: %w", g.name, errdefs.ErrNotFound)
	}
	var (
		s   Stats
		err error
	)
	if g.h.version == 2 {
		err = g.statsV2(&s)
	} else {
		err = g.statsV1(&s)
	}
	if err != nil {
		return Stats{}, fmt.Errorf("cgroup %s stats: %w", g.name, err)
	}
	return s, nil
}

func (g *Group) statsV1(s *Stats) error {
	if d, ok := g.v1["cpuacct"]; ok {
		ns, err := readUint(d, "cpuacct.usage")
		if err != nil {
			return err
		}
		s.CPUUsage = time.Duration(ns)
	}
	if d, ok := g.v1["memory"]; ok {
		var err error
		if s.MemoryBytes, err = readUint(d, "memory.usage_in_bytes"); err != nil {
			return err
		}
		if s.MemoryLimit, err = readUint(d, "memory.limit_in_bytes"); err != nil {
			return err
		}
		if s.MemoryLimit >= unlimitedMemory {
			s.MemoryLimit = 0
		}
		oom, err := readKeyed(d, "memory.oom_control")
		if err != nil {
			return err
		}
		s.OOMKills = oom["oom_kill"]
	}
	if d, ok := g.v1["pids"]; ok {
		n, err := readUint(d, "pids.current")
		if err != nil {
			return err
		}
		s.Pids = int(n)
	} else if len(g.dirs) > 0 {
		n, err := countLines(g.dirs[0], "tasks")
		if err != nil {
			return err
		}
		s.Pids = n
	}
	return nil
}

func (g *Group) statsV2(s *Stats) error {
	// cpu.stat's usage_usec comes from the core, with or without the cpu
	// controller.
	cpu, err := readKeyed(g.v2, "cpu.stat")
	if err != nil {
		return err
	}
	s.CPUUsage = time.Duration(cpu["usage_usec"]) * time.Microsecond
	switch cur, err := readUint(g.v2, "memory.current"); {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return err
	default:
		s.MemoryBytes = cur
		if s.MemoryLimit, err = readUint(g.v2, "memory.max"); err != nil {
			return err
		}
		ev, err := readKeyed(g.v2, "memory.events")
		if err != nil {
			return err
		}
		s.OOMKills = ev["oom_kill"]
	}
	switch n, err := readUint(g.v2, "pids.current"); {
	case errors.Is(err, fs.ErrNotExist):
		c, err := countLines(g.v2, "cgroup.threads")
		if err != nil {
			return err
		}
		s.Pids = c
	case err != nil:
		return err
	default:
		s.Pids = int(n)
	}
	return nil
}

// readUint reads a single-value file; "max" reads as 0 (no limit).
func readUint(dir, file string) (uint64, error) {
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return 0, err
	}
	return parseUint(filepath.Join(dir, file), string(b))
}

func parseUint(what, s string) (uint64, error) {
	s = strings.TrimSpace(s)
	if s == "max" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", what, err)
	}
	return n, nil
}

// readKeyed reads a flat keyed file ("key value" lines: cpu.stat,
// memory.events, memory.oom_control).
func readKeyed(dir, file string) (map[string]uint64, error) {
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return nil, err
	}
	return parseKeyed(filepath.Join(dir, file), string(b))
}

func parseKeyed(what, s string) (map[string]uint64, error) {
	out := map[string]uint64{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if len(f) != 2 {
			return nil, fmt.Errorf("parse %s: line %q is not \"key value\"", what, sc.Text())
		}
		n, err := parseUint(what, f[1])
		if err != nil {
			return nil, err
		}
		out[f[0]] = n
	}
	return out, nil
}

// countLines counts the non-empty lines of a file, e.g. the tasks of a
// group whose pids controller is absent.
func countLines(dir, file string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return 0, err
	}
	return len(strings.Fields(string(b))), nil
}
