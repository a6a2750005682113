package microvm

import (
	"errors"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

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

// RemoveFiles removes files that may not exist, and joins the other
// errors.
func RemoveFiles(files ...string) error {
	var errs []error
	for _, f := range files {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
