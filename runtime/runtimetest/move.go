package runtimetest

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/network"
	"roost.dev/roost/runtime"
)

// move checks a Mover: a hibernated sandbox, exported, is imported by
// another driver (newRT's, standing for another host) on another network
// slot, and restored there with its files, its processes counting on, its
// boot id and a socket bound to its former address; the export is
// refused for a running sandbox and into a directory that exists.
func move(t *testing.T, rt runtime.Runtime, newRT NewRuntime, nets *network.Manager) {
	mv, ok := rt.(runtime.Mover)
	if !ok {
		t.Skipf("%s cannot move sandboxes", rt.Name())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	src := StartBare(t, rt, nets, Options{Limits: runtime.Limits{MemoryMB: 256}})
	defer src.Close(context.WithoutCancel(ctx))
	addr, _, err := net.SplitHostPort(strings.TrimPrefix(src.Envd, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	src.MustExec(t, "echo kept > /root/state; nohup bash -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.05; done' >/dev/null 2>&1 &")
	src.MustExec(t, "nohup bash -c 'exec 5<>/dev/udp/"+addr+"/9; exec sleep 1000' >/dev/null 2>&1 &")
	time.Sleep(300 * time.Millisecond)
	boot := src.MustExec(t, "cat /proc/sys/kernel/random/boot_id")
	dir := filepath.Join(t.TempDir(), "export")
	if err := mv.Export(ctx, src.Spec.ID, dir); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("export of a running sandbox: %v, want ErrConflict", err)
	}
	if _, err := rt.(runtime.Snapshotter).Snapshot(ctx, src.Spec.ID); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	if err := mv.Export(ctx, src.Spec.ID, dir); err != nil {
		t.Fatalf("export: %v", err)
	}
	if err := mv.Export(ctx, src.Spec.ID, dir); err == nil {
		t.Error("a second export into an existing directory succeeded")
	}

	// The other host: another driver, another slot (so another address),
	// once the source is gone from this one.
	slot, err := nets.Acquire()
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Close(ctx); err != nil {
		t.Fatalf("destroy the source: %v", err)
	}
	nw, err := nets.Setup(ctx, src.Spec.ID, slot, false)
	if err != nil {
		nets.Release(slot)
		t.Fatal(err)
	}
	rt2 := newRT(t)
	spec := src.Spec
	spec.StateDir, spec.Network = filepath.Join(t.TempDir(), spec.ID), nw
	moved := &Sandbox{Spec: spec, Slot: slot, rt: rt2, net: nets}
	defer moved.Close(context.WithoutCancel(ctx))
	st, err := rt2.(runtime.Mover).Import(ctx, spec, dir)
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	inst, err := rt2.(runtime.Snapshotter).Restore(ctx, spec, st)
	if err != nil {
		t.Fatalf("restore on the other host: %v", err)
	}
	moved.Instance, moved.Envd = inst, "http://"+inst.Envd.String()
	if moved.Envd == src.Envd {
		t.Fatalf("the moved sandbox answers at %s, the address it had", moved.Envd)
	}
	if err := WaitHealthy(ctx, moved.Envd); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(moved.MustExec(t, "cat /root/state")); got != "kept" {
		t.Errorf("moved sandbox's file: %q, want kept", got)
	}
	first := counter(t, moved)
	time.Sleep(300 * time.Millisecond)
	if second := counter(t, moved); first == 0 || second <= first {
		t.Errorf("counter %d then %d: want the sandbox's process counting on", first, second)
	}
	if got := moved.MustExec(t, "cat /proc/sys/kernel/random/boot_id"); got != boot {
		t.Errorf("boot id %q after the move, %q before: want the same boot", got, boot)
	}
}
