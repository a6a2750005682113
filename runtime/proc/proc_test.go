package proc

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestLiveness(t *testing.T) {
	self, err := Of(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !self.Alive() {
		t.Error("this process is not alive")
	}
	reused := self
	reused.Start++
	if reused.Alive() {
		t.Error("a reused pid counts as alive")
	}
	if (Process{}).Alive() || (Process{}).Running(nil) {
		t.Error("pid 0 counts as alive")
	}
	if _, err := Of(1 << 22); err == nil {
		t.Error("Of a pid that does not exist succeeded")
	}
	u, err := self.Usage()
	if err != nil || u.RSS == 0 || u.Threads < 1 {
		t.Errorf("usage %+v, %v", u, err)
	}
}

// A process started in a network namespace runs there, is reaped when
// it ends, and is followed by its channel or, re-adopted, through /proc.
func TestStartKill(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("entering a network namespace needs root")
	}
	cmd := exec.Command("sleep", "60")
	p, exited, err := Start("/proc/self/ns/net", cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Kill(exited) })
	if !p.Running(exited) || !p.Running(nil) || !p.Alive() {
		t.Fatal("a started process does not run")
	}
	if p.WaitExit(context.Background(), nil, 50*time.Millisecond) {
		t.Error("WaitExit says a running process exited")
	}
	p.Kill(nil) // as a re-adopting agent would: no channel
	if p.Alive() {
		t.Error("a killed process runs on")
	}
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Fatal("the killed process was not reaped")
	}
	if p.Running(exited) {
		t.Error("a reaped process runs on")
	}
	if _, _, err := Start("/nonexistent/netns", exec.Command("true")); err == nil {
		t.Error("started a process in a namespace that does not exist")
	}
}

func TestUntilExit(t *testing.T) {
	exited := make(chan struct{})
	ctx, cancel := UntilExit(context.Background(), time.Minute, exited)
	defer cancel()
	close(exited)
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the context did not end with the process")
	}
}

// TestOnThrowawayThreadKeepsMainThread: what fn does to its thread never
// stays with the main thread, whose namespaces are the process's view in
// /proc/self.
func TestOnThrowawayThreadKeepsMainThread(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to unshare a mount namespace")
	}
	before, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	for range 200 {
		if err := OnThrowawayThread(func() error { return unix.Unshare(unix.CLONE_FS | unix.CLONE_NEWNS) }); err != nil {
			t.Fatal(err)
		}
	}
	if after, _ := os.Readlink("/proc/self/ns/mnt"); after != before {
		t.Fatalf("the main thread's mount namespace is %s, was %s", after, before)
	}
}

// StartPrepared runs prepare and what it returns on the thread that
// starts the child, the latter after the start; when that fails, the
// child is killed and the start fails.
func TestStartPrepared(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("entering a network namespace needs root")
	}
	var prepared, after int
	prepare := func() (func() error, error) {
		prepared = unix.Gettid()
		return func() error { after = unix.Gettid(); return nil }, nil
	}
	p, exited, err := StartPrepared("/proc/self/ns/net", prepare, exec.Command("sleep", "60"))
	if err != nil {
		t.Fatal(err)
	}
	p.Kill(exited)
	if prepared == 0 || after != prepared || prepared == unix.Getpid() {
		t.Errorf("prepare on thread %d, after on %d (main thread %d): want one thread, not the main one", prepared, after, unix.Getpid())
	}
	cmd := exec.Command("sleep", "60")
	failing := func() (func() error, error) { return func() error { return errors.New("left no way back") }, nil }
	if _, _, err := StartPrepared("/proc/self/ns/net", failing, cmd); err == nil || !strings.Contains(err.Error(), "left no way back") {
		t.Fatalf("a failing after: %v", err)
	}
	if cmd.ProcessState == nil || cmd.ProcessState.Success() {
		t.Errorf("the child of a failed start was not killed and reaped: %v", cmd.ProcessState)
	}
}
