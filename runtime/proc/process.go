package proc

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Process identifies a process across agent restarts: its pid and its
// start time, which tells a reused pid apart.
type Process struct {
	Pid   int    `json:"pid"`      // 0 when nothing runs
	Start uint64 `json:"pidStart"` // start time in clock ticks after boot
}

// Of returns the Process running as pid.
func Of(pid int) (Process, error) {
	f, err := stat(pid)
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
	f, err := stat(p.Pid)
	if err != nil || f[0] == "Z" {
		return false
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	return err == nil && start == p.Start
}

// Usage is a process's resource use as the kernel counts it.
type Usage struct {
	CPU     time.Duration // user and system time
	RSS     uint64        // resident bytes
	Threads int
}

// Usage reads p's CPU time, resident memory and thread count.
func (p Process) Usage() (Usage, error) {
	f, err := stat(p.Pid)
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

// stat returns the fields of /proc/pid/stat after the command name
// (which may hold spaces and parentheses): index 0 is field 3 (state).
func stat(pid int) ([]string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, errors.New("malformed stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return nil, errors.New("malformed stat")
	}
	return f, nil
}
