package proc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	goruntime "runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// InNetns runs fn on an OS thread that has entered the network namespace
// at path. The thread is never returned to the Go scheduler (see
// OnThrowawayThread): nothing else can run in a sandbox's namespace by
// accident.
func InNetns(path string, fn func() error) error {
	return OnThrowawayThread(func() error {
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("open netns: %w", err)
		}
		defer f.Close()
		// A thread shares its filesystem attributes with the process
		// unless it unshares them; setns(CLONE_NEWNET) does not need that.
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("enter netns %s: %w", path, err)
		}
		return fn()
	})
}

// OnThrowawayThread runs fn on an OS thread of its own that ends with it,
// for fn to change what only a thread can (enter namespaces): the
// goroutine ends locked to the thread, so the runtime discards it. Never
// on the process's main thread, which the runtime keeps instead (wedged
// in whatever namespace fn left it): /proc/self is that thread's view,
// and the process's mount table, as /proc/self/mountinfo shows it, would
// be the namespace's.
func OnThrowawayThread(fn func() error) error {
	done := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		if unix.Gettid() != unix.Getpid() {
			done <- fn() // never unlocked: the thread ends with this goroutine
			return
		}
		// The main thread: held by this goroutine, so the one started
		// here runs on another.
		defer goruntime.UnlockOSThread()
		inner := make(chan error, 1)
		go func() {
			goruntime.LockOSThread() // never unlocked
			inner <- fn()
		}()
		done <- <-inner
	}()
	return <-done
}

// Start starts cmd from a thread inside the network namespace at netns
// (the child inherits it), reaps it when it ends, and returns its Process
// and a channel closed then. A process re-adopted after an agent restart
// has no such channel: the methods below take nil for it and ask /proc
// instead.
func Start(netns string, cmd *exec.Cmd) (Process, <-chan struct{}, error) {
	return StartPrepared(netns, nil, cmd)
}

// StartPrepared is Start with prepare, when not nil, run first on the
// thread that starts cmd: what it changes of the thread (a namespace it
// enters, a cgroup it joins) the child inherits. The function prepare
// returns, when not nil, runs on that thread right after the start, even
// a failed one; when it fails, the started child is killed and the start
// fails. The thread ends after.
func StartPrepared(netns string, prepare func() (after func() error, err error), cmd *exec.Cmd) (Process, <-chan struct{}, error) {
	start := cmd.Start
	if prepare != nil {
		start = func() error {
			after, err := prepare()
			if err != nil {
				return err
			}
			err = cmd.Start()
			if after == nil {
				return err
			}
			if aerr := after(); aerr != nil {
				if err == nil {
					_ = cmd.Process.Kill()
					_ = cmd.Wait()
				}
				return errors.Join(err, aerr)
			}
			return err
		}
	}
	if err := InNetns(netns, start); err != nil {
		return Process{}, nil, err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	p, err := Of(cmd.Process.Pid)
	if err != nil {
		p = Process{Pid: cmd.Process.Pid} // gone already; exited says so
	}
	return p, exited, nil
}

// Running reports whether p runs; exited is Start's channel, or nil.
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
// waiting on a process's control socket, which a process that died never
// opens.
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
