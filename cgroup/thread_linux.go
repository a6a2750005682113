package cgroup

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"
)

// JoinThread prepares the calling OS thread to start a process that is
// born in the group, so that none has to be moved into it (AddProc):
// moving a process by its pid write-locks a host-wide lock, and every
// taking of it waits out an RCU grace period (10-14 ms a process on a
// 2-core host with five v1 hierarchies), where a thread that moves
// itself, or a process cloned into a cgroup2 directory, takes none.
//
// In each v1 hierarchy the thread moves itself into the group (its tasks
// file). The returned descriptor of the group's cgroup2 directory, -1
// when it has none, is for the start's clone (CLONE_INTO_CGROUP: package
// syscall's SysProcAttr.UseCgroupFD and CgroupFD). leave closes it and
// moves the thread back where it was; the caller calls it once the
// process has started, before the thread does anything else: until then
// the group's processes include the caller's own, which Kill would
// signal. The thread must stay locked to its goroutine throughout.
func (g *Group) JoinThread() (cgroupFD int, leave func() error, err error) {
	fd := -1
	var joined, back []string
	leave = func() error {
		var errs []error
		for i, d := range back {
			if err := writeFile(d, "tasks", "0"); err != nil {
				errs = append(errs, fmt.Errorf("leave cgroup %s for %s: %w", joined[i], d, err))
			}
		}
		if fd >= 0 {
			if err := unix.Close(fd); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	if len(g.v1) > 0 {
		were, err := V1Groups("/proc/thread-self/cgroup")
		if err != nil {
			return -1, nil, err
		}
		for _, c := range v1Controllers {
			d, ok := g.v1[c]
			if !ok || slices.Contains(joined, d) { // co-mounted controllers share d
				continue
			}
			was, ok := were[c]
			if !ok {
				return -1, nil, errors.Join(fmt.Errorf("join cgroup %s: this thread is in no %s cgroup", g.name, c), leave())
			}
			if err := writeFile(d, "tasks", "0"); err != nil {
				return -1, nil, errors.Join(fmt.Errorf("join cgroup %s: %w", d, err), leave())
			}
			joined, back = append(joined, d), append(back, filepath.Join(g.h.v1[c], was))
		}
	}
	if g.v2 != "" {
		if fd, err = unix.Open(g.v2, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
			fd = -1
			return -1, nil, errors.Join(fmt.Errorf("open cgroup %s: %w", g.v2, err), leave())
		}
	}
	return fd, leave, nil
}
