package microvm

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// StartVMM starts a sandbox's VMM, cmd, from a thread inside the network
// namespace at netns (the VMM opens the sandbox's TAP device there),
// reaps it when it ends, and returns its Process and a channel closed
// then. A VMM re-adopted after an agent restart has no such channel: the
// methods below take nil for it and ask /proc instead.
func StartVMM(netns string, cmd *exec.Cmd) (Process, <-chan struct{}, error) {
	if err := InNetns(netns, cmd.Start); err != nil {
		return Process{}, nil, err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	p, err := ProcessOf(cmd.Process.Pid)
	if err != nil {
		p = Process{Pid: cmd.Process.Pid} // gone already; exited says so
	}
	return p, exited, nil
}

// Running reports whether p runs; exited is StartVMM's channel, or nil.
func (p Process) Running(exited <-chan struct{}) bool {
	if p.Pid == 0 {
		return false
	}
	if exited != nil {
		select {
		case <-exited:
			return false
		default:
			return true
		}
	}
	return p.Alive()
}

// WaitExit waits up to d, or until ctx ends, for p to exit, and reports
// whether it did.
func (p Process) WaitExit(ctx context.Context, exited <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	if exited != nil {
		select {
		case <-exited:
			return true
		case <-t.C:
		case <-ctx.Done():
		}
		return false
	}
	for p.Alive() {
		select {
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		case <-time.After(10 * time.Millisecond):
		}
	}
	return true
}

// Kill ends p at once and waits up to 5 s for it to go.
func (p Process) Kill(exited <-chan struct{}) {
	if p.Running(exited) {
		_ = syscall.Kill(p.Pid, syscall.SIGKILL)
		p.WaitExit(context.Background(), exited, 5*time.Second)
	}
}

// UntilExit is ctx bounded by d that also ends when exited closes: for
// waiting on a VMM's control socket, which a VMM that died never opens.
func UntilExit(ctx context.Context, d time.Duration, exited <-chan struct{}) (context.Context, context.CancelFunc) {
	cctx, cancel := context.WithTimeout(ctx, d)
	go func() {
		select {
		case <-exited:
			cancel()
		case <-cctx.Done():
		}
	}()
	return cctx, cancel
}

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
