package namespace

import (
	"context"
	"errors"
	"fmt"
	goruntime "runtime"

	"golang.org/x/sys/unix"

	"roost.dev/roost/runtime"
)

var _ runtime.Renamer = (*Driver)(nil)

// SetHostname implements runtime.Renamer: a warm pool's sandbox takes
// the name of the create that claims it. envd's /init then writes the
// files that name it (/etc/hostname, /etc/hosts).
func (d *Driver) SetHostname(ctx context.Context, id, hostname string) error {
	h, err := d.running(id)
	if err != nil {
		return err
	}
	if err := setHostname(h.rec.Pid, hostname); err != nil {
		return fmt.Errorf("sandbox %s: %w", id, err)
	}
	return nil
}

// setHostname gives the UTS namespace of process pid the hostname name,
// from a thread that enters it: the sandbox's root may not (it has no
// CAP_SYS_ADMIN), and envd's /init then writes the files that name it.
// The thread goes back to the host's UTS namespace and to the scheduler
// (a new thread for each call would cost a claim from a warm pool up to
// milliseconds); if it cannot go back, it ends with its goroutine.
func setHostname(pid int, name string) error {
	done := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		host, err := unix.Open("/proc/thread-self/ns/uts", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			goruntime.UnlockOSThread()
			done <- fmt.Errorf("hostname: %w", err)
			return
		}
		defer unix.Close(host)
		ns, err := unix.Open(fmt.Sprintf("/proc/%d/ns/uts", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			goruntime.UnlockOSThread()
			done <- fmt.Errorf("hostname: %w", err)
			return
		}
		defer unix.Close(ns)
		if err := unix.Setns(ns, unix.CLONE_NEWUTS); err != nil {
			goruntime.UnlockOSThread()
			done <- fmt.Errorf("hostname: enter UTS namespace of %d: %w", pid, err)
			return
		}
		err = unix.Sethostname([]byte(name))
		if rerr := unix.Setns(host, unix.CLONE_NEWUTS); rerr != nil {
			// Locked still: the thread ends with this goroutine.
			done <- errors.Join(err, fmt.Errorf("hostname: back to the host's UTS namespace: %w", rerr))
			return
		}
		goruntime.UnlockOSThread()
		if err != nil {
			err = fmt.Errorf("hostname: %w", err)
		}
		done <- err
	}()
	return <-done
}
