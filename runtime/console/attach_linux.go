package console

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"syscall"
)

// Attach drains again the console of a sandbox that runs while no drain
// does (the agent restarted): it opens the pipe through /proc/pid/fd/N for
// the first of fds that is a pipe, pid being a host-side process that holds
// the write end (a namespace sandbox's init, a VM's VMM). Attaching a
// console that is already drained does nothing.
func Attach(log *slog.Logger, path string, pid int, fds ...int) error {
	if Running(path) {
		return nil
	}
	var errs []error
	for _, fd := range fds {
		f, err := openPipe(fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
		if err == nil {
			return start(log, path, f)
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("attach console of process %d: %w", pid, errors.Join(errs...))
}

// openPipe opens the pipe at p (a /proc magic link) for reading. The
// process holding it may belong to the sandbox, so p is opened without
// blocking and refused unless it is a pipe: a FIFO without writers would
// hang the open, a device or file is not a console.
func openPipe(p string) (*os.File, error) {
	fd, err := syscall.Open(p, syscall.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", p, err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFIFO {
		syscall.Close(fd)
		return nil, fmt.Errorf("%s is not a pipe", p)
	}
	return os.NewFile(uintptr(fd), p), nil
}
