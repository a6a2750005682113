package metrics

import (
	"bufio"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// cgroupView reads the limits and use of the cgroup envd runs in, below
// a cgroupfs mounted at root (/sys/fs/cgroup), as /proc/self/cgroup names
// it. In a roost namespace sandbox that is the sandbox's own group: /proc
// there shows the host's memory and CPUs, its cgroup the sandbox's share.
// Both cgroup v2 and v1 (memory, cpu and cpuacct controllers) are read;
// what a host does not have reads as "no limit".
type cgroupView struct {
	v2 string            // the unified hierarchy's directory, "" if none
	v1 map[string]string // controller → directory
}

// findCgroup locates the process's groups; a missing or unreadable
// /proc/self/cgroup leaves the view empty.
func findCgroup(proc, root string) cgroupView {
	cg := cgroupView{v1: map[string]string{}}
	b, err := os.ReadFile(filepath.Join(proc, "self", "cgroup"))
	if err != nil {
		return cg
	}
	for line := range strings.Lines(string(b)) {
		parts := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" {
			for _, mnt := range []string{root, filepath.Join(root, "unified")} {
				if exists(filepath.Join(mnt, "cgroup.controllers")) {
					cg.v2 = filepath.Join(mnt, parts[2])
					break
				}
			}
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if dir := filepath.Join(root, c, parts[2]); exists(dir) {
				cg.v1[c] = dir
			}
		}
	}
	return cg
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// memory returns the group's memory limit and use without reclaimable
// file cache; ok is false when the group has no limit.
func (cg cgroupView) memory() (limit, used uint64, ok bool) {
	if dir := cg.v1["memory"]; dir != "" {
		limit, ok = readUint(filepath.Join(dir, "memory.limit_in_bytes"))
		usage, _ := readUint(filepath.Join(dir, "memory.usage_in_bytes"))
		inactive := statField(filepath.Join(dir, "memory.stat"), "total_inactive_file")
		return limit, usage - min(inactive, usage), ok && limit < 1<<60
	}
	if cg.v2 != "" {
		limit, ok = readUint(filepath.Join(cg.v2, "memory.max")) // "max" does not parse: no limit
		usage, _ := readUint(filepath.Join(cg.v2, "memory.current"))
		inactive := statField(filepath.Join(cg.v2, "memory.stat"), "inactive_file")
		return limit, usage - min(inactive, usage), ok
	}
	return 0, 0, false
}

// cache returns the group's page cache (file-backed memory); ok is false
// when envd runs in no memory cgroup it can read.
func (cg cgroupView) cache() (uint64, bool) {
	if dir := cg.v1["memory"]; dir != "" {
		return statField(filepath.Join(dir, "memory.stat"), "total_cache"), true
	}
	if cg.v2 != "" && exists(filepath.Join(cg.v2, "memory.stat")) {
		return statField(filepath.Join(cg.v2, "memory.stat"), "file"), true
	}
	return 0, false
}

// cpus returns the CPUs the group's quota amounts to, rounded up; ok is
// false without a quota.
func (cg cgroupView) cpus() (float64, bool) {
	var quota, period float64
	if dir := cg.v1["cpu"]; dir != "" {
		q, err := readInt(filepath.Join(dir, "cpu.cfs_quota_us"))
		p, perr := readInt(filepath.Join(dir, "cpu.cfs_period_us"))
		if err != nil || perr != nil || q <= 0 || p <= 0 {
			return 0, false
		}
		quota, period = float64(q), float64(p)
	} else if cg.v2 != "" {
		b, err := os.ReadFile(filepath.Join(cg.v2, "cpu.max"))
		f := strings.Fields(string(b))
		if err != nil || len(f) != 2 {
			return 0, false
		}
		q, qerr := strconv.ParseFloat(f[0], 64) // "max": no quota
		p, perr := strconv.ParseFloat(f[1], 64)
		if qerr != nil || perr != nil || q <= 0 || p <= 0 {
			return 0, false
		}
		quota, period = q, p
	} else {
		return 0, false
	}
	return math.Ceil(quota / period), true
}

// cpuUsage returns the group's CPU time in nanoseconds.
func (cg cgroupView) cpuUsage() (uint64, bool) {
	if dir := cg.v1["cpuacct"]; dir != "" {
		return readUint(filepath.Join(dir, "cpuacct.usage"))
	}
	if cg.v2 != "" {
		if usec := statField(filepath.Join(cg.v2, "cpu.stat"), "usage_usec"); usec > 0 {
			return usec * 1000, true
		}
	}
	return 0, false
}

func readUint(p string) (uint64, bool) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return n, err == nil
}

func readInt(p string) (int64, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// statField reads "name value" from a memory.stat or cpu.stat file; 0
// when absent.
func statField(p, name string) uint64 {
	f, err := os.Open(p)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), " "); ok && k == name {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}
