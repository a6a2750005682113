package microvm

import (
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"roost.dev/roost/runtime"
)

// Process identifies a VMM process across agent restarts: its pid and its
// start time, which tells a reused pid apart.
type Process struct {
	Pid   int    `json:"pid"`      // 0 when nothing runs
	Start uint64 `json:"pidStart"` // start time in clock ticks after boot
}

// ProcessOf returns the Process running as pid.
func ProcessOf(pid int) (Process, error) {
	f, err := procStat(pid)
	if err != nil {
		return Process{}, err
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return Process{}, fmt.Errorf("pid %d: start time: %w", pid, err)
	}
	return Process{Pid: pid, Start: start}, nil
}

// Alive reports whether p still runs and is the same process (not a
// zombie, not a reused pid).
func (p Process) Alive() bool {
	if p.Pid <= 0 {
		return false
	}
	f, err := procStat(p.Pid)
	if err != nil || f[0] == "Z" {
		return false
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	return err == nil && start == p.Start
}

// Usage is a process's resource use as the kernel counts it.
type Usage struct {
	CPU     time.Duration // user and system time
	RSS     uint64        // resident bytes (guest memory the guest touched, for a VMM)
	Threads int
}

// Usage reads p's CPU time, resident memory and thread count.
func (p Process) Usage() (Usage, error) {
	f, err := procStat(p.Pid)
	if err != nil {
		return Usage{}, fmt.Errorf("pid %d: %w", p.Pid, err)
	}
	utime, _ := strconv.ParseUint(f[11], 10, 64)
	stime, _ := strconv.ParseUint(f[12], 10, 64)
	const hz = 100 // USER_HZ
	u := Usage{CPU: time.Duration(utime+stime) * time.Second / hz}
	u.Threads, _ = strconv.Atoi(f[17])
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.Pid) + "/status")
	if err != nil {
		return u, nil
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			u.RSS = kb << 10
		}
	}
	return u, nil
}

// procStat returns the fields of /proc/pid/stat after the command name:
// index 0 is field 3 (state).
func procStat(pid int) ([]string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, fmt.Errorf("malformed stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return nil, fmt.Errorf("malformed stat")
	}
	return f, nil
}

// PruneVMMs kills the VMM processes of roost sandboxes (see StrayVMMs)
// that are neither in keep nor known to the driver (known: a sandbox a
// Create racing the prune may be starting), logging each: a driver's
// Prune.
func PruneVMMs(exe, flag, prefix string, keep []string, known func(id string) bool, log *slog.Logger) error {
	vmms, err := StrayVMMs(exe, flag, prefix)
	if err != nil {
		return err
	}
	for pid, id := range vmms {
		if slices.Contains(keep, id) || known(id) {
			continue
		}
		log.Info("prune: killing stray vmm", "vmm", exe, "sandbox", id, "pid", pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return nil
}

// Stats is a VMM's resource use as a sandbox's: memoryMB is the guest's
// memory, its limit. A zero Process (a hibernated sandbox) uses nothing.
func (p Process) Stats(memoryMB int) (runtime.Stats, error) {
	st := runtime.Stats{MemoryLimit: uint64(memoryMB) << 20}
	if p.Pid == 0 {
		return st, nil
	}
	u, err := p.Usage()
	if err != nil {
		return st, err
	}
	st.CPUUsage, st.MemoryBytes, st.Pids = u.CPU, u.RSS, u.Threads
	return st, nil
}

// StrayVMMs lists the processes whose executable's base name contains
// exe (at most 15 bytes: the kernel keeps that much of a name) and whose
// command line has flag followed by a value starting with prefix: the
// VMMs of roost sandboxes, for a driver's Prune. It returns each one's
// pid and the rest of that value (the sandbox ID).
func StrayVMMs(exe, flag, prefix string) (map[int]string, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	out := map[int]string{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		// The name first (the first 15 bytes of the executable's): reading
		// a process's cmdline takes its memory map's lock, which an
		// unrelated busy process may hold for long.
		comm, err := os.ReadFile("/proc/" + e.Name() + "/comm")
		if err != nil || !strings.Contains(string(comm), exe) {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) == 0 || !strings.Contains(lastElem(args[0]), exe) {
			continue
		}
		for i := 0; i+1 < len(args); i++ {
			if args[i] == flag && strings.HasPrefix(args[i+1], prefix) {
				out[pid] = strings.TrimPrefix(args[i+1], prefix)
				break
			}
		}
	}
	return out, nil
}

func lastElem(p string) string { return p[strings.LastIndexByte(p, '/')+1:] }
