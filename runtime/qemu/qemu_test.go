package qemu_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/qemu"
	"roost.dev/roost/runtime/runtimetest"
	"roost.dev/roost/runtime/vmimage"
	"roost.dev/roost/template/templatetest"
)

func newDriver(t testing.TB) *qemu.Driver {
	t.Helper()
	runtimetest.RequireRoot(t)
	d := qemu.New(qemu.Config{
		DataDir: filepath.Join(templatetest.CacheDir(), "runtime", "qemu"),
		Init:    runtimetest.GuestInit(t),
	}, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: testLogLevel()})))
	av := d.Probe(context.Background())
	if !av.Available {
		t.Skipf("qemu runtime unavailable: %s", av.Reason)
	}
	if av.Reason != "" {
		t.Log(av.Reason)
	}
	return d
}

func TestConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("boots VMs")
	}
	runtimetest.Run(t, func(t testing.TB) runtime.Runtime { return newDriver(t) }, runtimetest.Network(t))
}

// TestSnapshotRestore boots one VM and takes it through everything past
// the conformance suite: its own kernel, hibernation to disk and restore
// on another network slot with processes and files intact, and re-adoption
// by a second driver (an agent restart).
func TestSnapshotRestore(t *testing.T) {
	if testing.Short() {
		t.Skip("boots VMs")
	}
	d := newDriver(t)
	nw := runtimetest.Network(t)
	sb := runtimetest.Start(t, d, nw, runtimetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	hk, err := vmimage.FindHostKernel("/boot", "/lib/modules")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(sb.MustExec(t, "uname -r")); got != hk.Version {
		t.Errorf("uname -r inside: %q, want the guest kernel %q", got, hk.Version)
	}
	host, _ := exec.Command("uname", "-r").Output()
	t.Logf("guest kernel %s, host kernel %s", hk.Version, strings.TrimSpace(string(host)))

	sb.MustExec(t, "echo kept > /root/state; nohup bash -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/counter.new; mv /tmp/counter.new /tmp/counter; sleep 0.05; done' >/dev/null 2>&1 &")
	time.Sleep(500 * time.Millisecond)
	before, _ := strconv.Atoi(strings.TrimSpace(sb.MustExec(t, "cat /tmp/counter")))

	state, err := d.Snapshot(ctx, sb.Spec.ID)
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	st, err := os.Stat(snapshotFile(sb.Spec.StateDir))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%v snapshot: %d MiB", time.Now().Format("15:04:05.000"), st.Size()>>20)
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	_, err = sb.Exec(short, "true")
	cancelShort()
	if err == nil {
		t.Fatal("envd answers after the snapshot ended its vm")
	}

	// Restore on another slot: the guest's own address is the same in
	// every sandbox, so the snapshot does not care.
	tt := time.Now()
	if err := nw.Teardown(ctx, sb.Spec.ID, sb.Slot); err != nil {
		t.Fatal(err)
	}
	t.Logf("teardown took %v", time.Since(tt))
	nw.Release(sb.Slot)
	slot, err := nw.Acquire()
	if err != nil {
		t.Fatal(err)
	}
	sb.Slot = slot
	if sb.Spec.Network, err = nw.Setup(ctx, sb.Spec.ID, slot, false); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	inst, err := d.Restore(ctx, sb.Spec, state)
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	sb.Instance, sb.Envd = inst, "http://"+inst.Envd.String()
	if err := runtimetest.WaitHealthy(ctx, sb.Envd); err != nil {
		t.Fatal(err)
	}
	t.Logf("restore → envd healthy in %v", time.Since(start))
	if got := strings.TrimSpace(sb.MustExec(t, "cat /root/state")); got != "kept" {
		t.Errorf("file after restore: %q", got)
	}
	first, _ := strconv.Atoi(strings.TrimSpace(sb.MustExec(t, "cat /tmp/counter")))
	time.Sleep(500 * time.Millisecond)
	second, _ := strconv.Atoi(strings.TrimSpace(sb.MustExec(t, "cat /tmp/counter")))
	if first < before || second <= first {
		t.Errorf("counter was %d at snapshot, %d then %d after restore: want it to go on counting", before, first, second)
	}

	// A second driver stands for an agent of the version before, which
	// kept no driver state: the driver reads the qemu.json it wrote then.
	runtimetest.WriteLegacyState(t, sb.Spec.StateDir, "qemu.json", inst.State)
	if old, err := newDriver(t).Recover(ctx, sb.Spec, runtime.DriverState{}); err != nil || old.Pid != inst.Pid {
		t.Fatalf("recover from the legacy state file: %+v, %v; want pid %d", old, err, inst.Pid)
	}
	// Another stands for the agent after a restart.
	again := newDriver(t)
	inst2, err := again.Recover(ctx, sb.Spec, inst.State)
	if err != nil {
		t.Fatalf("recover: %v", err)
	}
	if inst2.Pid != inst.Pid || inst2.Envd != inst.Envd {
		t.Errorf("recovered %+v, had %+v", inst2, inst)
	}
	if err := again.Pause(ctx, sb.Spec.ID); err != nil {
		t.Fatalf("pause through the re-adopted qmp: %v", err)
	}
	if err := again.Resume(ctx, sb.Spec.ID); err != nil {
		t.Fatal(err)
	}
	sb.MustExec(t, "true")

	// Hibernate, then "restart the agent" again: Recover restores a
	// sandbox whose record says it is on disk.
	hibernated, err := again.Snapshot(ctx, sb.Spec.ID)
	if err != nil {
		t.Fatalf("second snapshot: %v", err)
	}
	// The agent of the version before restarts: its record holds no
	// state, and the driver reads the qemu.json it wrote then.
	runtimetest.WriteLegacyState(t, sb.Spec.StateDir, "qemu.json", hibernated)
	third := newDriver(t)
	inst3, err := third.Recover(ctx, sb.Spec, runtime.DriverState{})
	if err != nil {
		t.Fatalf("recover a hibernated sandbox: %v", err)
	}
	if err := runtimetest.WaitHealthy(ctx, "http://"+inst3.Envd.String()); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(sb.MustExec(t, "cat /root/state")); got != "kept" {
		t.Errorf("file after hibernation and recovery: %q", got)
	}
	if err := third.Destroy(ctx, sb.Spec.ID); err != nil {
		t.Fatal(err)
	}
	// What Destroy leaves is nothing Recover could adopt.
	for _, st := range []runtime.DriverState{inst3.State, hibernated, {}} {
		if _, err := newDriver(t).Recover(ctx, sb.Spec, st); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("recover after destroy: %v, want ErrNotFound", err)
		}
	}
}

func testLogLevel() slog.Level {
	if os.Getenv("ROOST_TEST_VERBOSE") != "" {
		return slog.LevelDebug
	}
	return slog.LevelWarn
}
