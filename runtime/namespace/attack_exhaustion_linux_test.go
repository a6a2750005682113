package namespace_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/runtimetest"
	"roost.dev/roost/template/templatetest"
)

// TestAttackForkBomb: a fork bomb in a sandbox stops at its pids limit;
// another sandbox starts and runs meanwhile, and the bombed one works
// once the bomb is spent.
func TestAttackForkBomb(t *testing.T) {
	d := newDriver(t)
	nw := runtimetest.Network(t)
	sb := runtimetest.Start(t, d, nw, runtimetest.Options{Limits: runtime.Limits{Pids: 128}})
	// Each process forks twice and lives 2 s; depth 13 asks for 16k.
	res, err := sb.Exec(t.Context(), "f(){ [ $1 -gt 0 ] || return; f $(($1-1)) & f $(($1-1)) & sleep 2; }; f 13; wait; sleep 3; echo spent")
	if err != nil {
		t.Fatalf("exec: %v", err)
	}
	if !strings.Contains(res.Stderr, "Resource temporarily unavailable") {
		t.Errorf("the bomb never hit the pids limit: stderr %.300q", res.Stderr)
	}
	other := runtimetest.Start(t, d, nw, runtimetest.Options{})
	other.MustExec(t, "true")
	waitWorks(t, sb)
}

// TestAttackMemoryExhaustion: a process that allocates without end is
// stopped at the sandbox's memory limit, not the host's; the sandbox
// (envd included) works afterwards.
func TestAttackMemoryExhaustion(t *testing.T) {
	d := newDriver(t)
	nw := runtimetest.Network(t)
	sb := runtimetest.Start(t, d, nw, runtimetest.Options{Limits: runtime.Limits{MemoryMB: 256}})
	var before unix.Sysinfo_t
	_ = unix.Sysinfo(&before)
	res, err := sb.Exec(t.Context(), "python3 -c 'a = []\nwhile True: a.append(bytearray(16 << 20))'; echo exit=$?")
	if err != nil {
		t.Fatalf("exec: %v", err)
	}
	if !strings.Contains(res.Stdout, "exit=137") && !strings.Contains(res.Stderr, "MemoryError") {
		t.Errorf("the allocation was not stopped by the limit: %q %.300q", res.Stdout, res.Stderr)
	}
	waitWorks(t, sb)
}

// TestAttackDiskFill: writing without end fills the sandbox's own disk
// (ENOSPC at its size), not the host's; freeing it makes the sandbox
// writable again.
func TestAttackDiskFill(t *testing.T) {
	d := newDriver(t)
	nw := runtimetest.Network(t)
	sb := runtimetest.Start(t, d, nw, runtimetest.Options{Limits: runtime.Limits{DiskMB: 512}})
	var before unix.Statfs_t
	if err := unix.Statfs(templatetest.CacheDir(), &before); err != nil {
		t.Fatal(err)
	}
	res, err := sb.Exec(t.Context(), "dd if=/dev/zero of=/root/fill bs=1M count=4096 2>&1; sync")
	if err != nil {
		t.Fatalf("exec: %v", err)
	}
	if !strings.Contains(res.Stdout, "No space left on device") {
		t.Errorf("4 GiB fit a 512 MiB disk: %.300q", res.Stdout)
	}
	var after unix.Statfs_t
	if err := unix.Statfs(templatetest.CacheDir(), &after); err != nil {
		t.Fatal(err)
	}
	usedMB := (int64(before.Bavail) - int64(after.Bavail)) * int64(after.Bsize) >> 20
	if usedMB > 1024 {
		t.Errorf("the host's disk lost %d MiB to a 512 MiB sandbox", usedMB)
	}
	sb.MustExec(t, "rm /root/fill && echo ok > /root/after && cat /root/after")
}

// TestAttackInotifyExhaustion: one sandbox takes every inotify instance
// its user may have (Linux charges them to host root too, whose pool of
// 128 one sandbox used to exhaust for all); it stops at its own cap,
// cannot raise it, another sandbox can still watch files, and so can the
// first once it lets go.
func TestAttackInotifyExhaustion(t *testing.T) {
	d := newDriver(t)
	nw := runtimetest.Network(t)
	hog := runtimetest.Start(t, d, nw, runtimetest.Options{})
	other := runtimetest.Start(t, d, nw, runtimetest.Options{})
	const grab = `import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
fds = []
while True:
    fd = libc.inotify_init()
    if fd < 0:
        break
    fds.append(fd)
print("held", len(fds), "errno", ctypes.get_errno(), flush=True)
time.sleep(30)
`
	if err := hog.WriteFile(t.Context(), "/tmp/grab.py", []byte(grab)); err != nil {
		t.Fatal(err)
	}
	hog.MustExec(t, "nohup python3 /tmp/grab.py > /tmp/grab.log 2>&1 &")
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(hog.MustExec(t, "cat /tmp/grab.log"), "held") {
		if time.Now().After(deadline) {
			t.Fatal("the hog never exhausted its inotify instances")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if log := hog.MustExec(t, "cat /tmp/grab.log"); !strings.Contains(log, "held 128 ") {
		t.Errorf("the hog got past its per-user cap of 128: %q", log)
	}
	if res, err := hog.Exec(t.Context(), "echo 1000000 > /proc/sys/user/max_inotify_instances"); err != nil || res.ExitCode == 0 {
		t.Errorf("the sandbox raised its own inotify cap: %v %+v", err, res)
	}
	const watch = `python3 -c 'import ctypes; fd = ctypes.CDLL(None).inotify_init(); print("fd", fd)'`
	if out := other.MustExec(t, watch); strings.Contains(out, "fd -1") {
		t.Errorf("another sandbox cannot make an inotify instance: %q", out)
	}
	hog.MustExec(t, "pkill -f '^python3 /tmp/grab' ; true")
	deadline = time.Now().Add(30 * time.Second)
	for strings.Contains(hog.MustExec(t, watch), "fd -1") {
		if time.Now().After(deadline) {
			t.Fatal("the hog's sandbox cannot make an inotify instance after letting go")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitWorks waits until the sandbox runs a command again (its envd may
// have been restarted by its init after an OOM kill).
func waitWorks(t *testing.T, sb *runtimetest.Sandbox) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		res, err := sb.Exec(ctx, "echo works")
		cancel()
		if err == nil && strings.Contains(res.Stdout, "works") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sandbox no longer works: %v %+v", err, res)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
