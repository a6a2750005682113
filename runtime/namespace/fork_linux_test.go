package namespace_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/namespace"
	"roost.dev/roost/runtime/runtimetest"
)

// TestForkLayers forks a sandbox, then a fork of it, and checks what the
// conformance test cannot see from inside: each fork's processes run in
// its own host ID range and cgroup, the files it inherited are its root's
// (and writable: copied up), a server it inherited answers on its own
// address, its disk did not grow by the source's files, and a fork
// hibernates and restores, halts and boots like any sandbox, after its
// source and the capture are gone.
func TestForkLayers(t *testing.T) {
	d := newDriver(t)
	needCRIU(t, d)
	net := runtimetest.Network(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	src := runtimetest.Start(t, d, net, runtimetest.Options{})
	src.MustExec(t, `head -c 20000000 /dev/urandom > /root/big && echo kept > /root/state && chown 1000:1000 /root/state
mkdir -p /srv && echo page > /srv/index.html
nohup python3 -m http.server 8080 --directory /srv >/dev/null 2>&1 &
for i in $(seq 50); do curl -sf localhost:8080/ >/dev/null && break; sleep 0.1; done`)
	sum := src.MustExec(t, "md5sum < /root/big")

	capture := func(sb *runtimetest.Sandbox) string {
		dir := filepath.Join(t.TempDir(), "capture")
		if err := d.Capture(ctx, sb.Spec.ID, dir); err != nil {
			t.Fatalf("capture: %v", err)
		}
		return dir
	}
	dir := capture(src)
	fork := runtimetest.Start(t, d, net, runtimetest.Options{Fork: dir})
	checkFork(t, src, fork, sum)
	if got := diskBytes(t, fork.Spec.StateDir); got > 10<<20 {
		t.Errorf("the fork's own disk holds %d bytes before it wrote: want the source's files shared, not copied", got)
	}

	// A fork of the fork: two layers under its disk.
	fork.MustExec(t, "echo second > /root/second")
	dir2 := capture(fork)
	grand := runtimetest.Start(t, d, net, runtimetest.Options{Fork: dir2})
	checkFork(t, fork, grand, sum)
	if got := strings.TrimSpace(grand.MustExec(t, "cat /root/second")); got != "second" {
		t.Errorf("the fork's fork reads %q of the fork's file", got)
	}

	// The source and the captures go; the forks hibernate and restore,
	// halt and boot, on their layers.
	if err := src.Close(ctx); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(dir)
	os.RemoveAll(dir2)
	if _, err := d.Snapshot(ctx, grand.Spec.ID); err != nil {
		t.Fatalf("hibernate the fork's fork: %v", err)
	}
	inst, err := d.Restore(ctx, grand.Spec, runtime.DriverState{})
	if err != nil {
		t.Fatalf("restore the fork's fork: %v", err)
	}
	grand.Instance, grand.Envd = inst, "http://"+inst.Envd.String()
	if err := runtimetest.WaitHealthy(ctx, grand.Envd); err != nil {
		t.Fatal(err)
	}
	if got := grand.MustExec(t, "md5sum < /root/big; cat /root/second; curl -sf localhost:8080/"); got != sum+"second\npage\n" {
		t.Errorf("the fork's fork after a restore: %q", got)
	}
	st, err := d.Halt(ctx, fork.Spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if inst, err = d.Boot(ctx, fork.Spec, st); err != nil {
		t.Fatalf("boot the fork: %v", err)
	}
	fork.Instance, fork.Envd = inst, "http://"+inst.Envd.String()
	if err := runtimetest.WaitHealthy(ctx, fork.Envd); err != nil {
		t.Fatal(err)
	}
	if got := fork.MustExec(t, "md5sum < /root/big; cat /root/second /root/state"); got != sum+"second\n"+fork.Spec.ID+"\n" {
		t.Errorf("the fork after a boot: %q", got)
	}
}

// TestCaptureRefused: a sandbox holding what CRIU cannot dump is refused
// with ErrConflict and CRIU's reason, leaves no capture, and runs on.
func TestCaptureRefused(t *testing.T) {
	d := newDriver(t)
	needCRIU(t, d)
	sb := runtimetest.Start(t, d, runtimetest.Network(t), runtimetest.Options{})
	holdMPTCP(t, sb)
	dir := filepath.Join(t.TempDir(), "capture")
	err := d.Capture(context.Background(), sb.Spec.ID, dir)
	if !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("capture: %v, want ErrConflict", err)
	}
	t.Logf("refused: %v", err)
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("capture directory after the refusal: %v", err)
	}
	if got := strings.TrimSpace(sb.MustExec(t, "pgrep -c -f IPPROTO_MPTCP")); got != "1" {
		t.Errorf("the MPTCP process after the refusal: %q", got)
	}
}

// checkFork checks the fork of parent.
func checkFork(t *testing.T, parent, fork *runtimetest.Sandbox, sum string) {
	t.Helper()
	if got := fork.MustExec(t, "md5sum < /root/big; stat -c '%u:%g %U' /root/state; curl -sf localhost:8080/"); got != sum+"1000:1000 user\npage\n" {
		t.Errorf("the fork sees %q", got)
	}
	fork.MustExec(t, "echo "+fork.Spec.ID+" > /root/state")
	if got := strings.TrimSpace(parent.MustExec(t, "cat /root/state")); got == fork.Spec.ID {
		t.Error("the fork's write reached its parent")
	}
	if own, src := hostUID(t, fork.Instance.Pid), hostUID(t, parent.Instance.Pid); own == src || own < namespace.HostIDBase {
		t.Errorf("the fork's init runs as host uid %d, its parent's as %d: want a range of its own", own, src)
	}
	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", fork.Instance.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cg), "roost/"+fork.Spec.ID) {
		t.Errorf("the fork's init is in the cgroups %q, not its own", cg)
	}
	if sandboxMemory(t, fork.Spec.ID) == 0 {
		t.Error("the fork's cgroup charges no memory")
	}
}

// diskBytes is what the sandbox's own disk image takes on the host.
func diskBytes(t *testing.T, stateDir string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(stateDir, "disk.img"), &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}
