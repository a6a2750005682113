package runtimetest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/network"
	"roost.dev/roost/runtime"
)

// recoverTwice: the driver that runs a sandbox, and a new one after an
// agent restart, each recover it twice from the state Create returned,
// and the new one then owns it.
func recoverTwice(t *testing.T, rt runtime.Runtime, newRT NewRuntime, net *network.Manager) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sb := Start(t, rt, net, Options{})
	if sb.Instance.State.IsZero() {
		t.Fatal("create returned no driver state")
	}
	sb.MustExec(t, "echo kept > /root/state")
	again := newRT(t)
	for _, d := range []runtime.Runtime{rt, rt, again, again} {
		inst, err := d.Recover(ctx, sb.Spec, sb.Instance.State)
		if err != nil {
			t.Fatalf("recover: %v", err)
		}
		if inst.Pid != sb.Instance.Pid || inst.Envd != sb.Instance.Envd || inst.State.IsZero() {
			t.Errorf("recovered %+v, had %+v", inst, sb.Instance)
		}
	}
	if got := strings.TrimSpace(sb.MustExec(t, "cat /root/state")); got != "kept" {
		t.Errorf("file after recovery: %q", got)
	}
	if _, err := again.Stats(ctx, sb.Spec.ID); err != nil {
		t.Errorf("stats of the recovered sandbox: %v", err)
	}
	if err := again.Destroy(ctx, sb.Spec.ID); err != nil {
		t.Fatalf("destroy the recovered sandbox: %v", err)
	}
	if err := sb.WaitGone(ctx); err != nil {
		t.Error(err)
	}
	// What Destroy leaves is nothing a restarted agent could adopt.
	if _, err := newRT(t).Recover(ctx, sb.Spec, sb.Instance.State); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("recover after destroy: %v, want ErrNotFound", err)
	}
}

// prune: after a restart, the driver's Prune removes a sandbox the agent
// did not recover, and leaves the one it did.
func prune(t *testing.T, rt runtime.Runtime, newRT NewRuntime, net *network.Manager) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	kept := Start(t, rt, net, Options{})
	stray := Start(t, rt, net, Options{})
	again := newRT(t)
	if _, err := again.Recover(ctx, kept.Spec, kept.Instance.State); err != nil {
		t.Fatalf("recover: %v", err)
	}
	for range 2 {
		if err := again.Prune(ctx, []string{kept.Spec.ID}); err != nil {
			t.Fatalf("prune: %v", err)
		}
	}
	if err := stray.WaitGone(ctx); err != nil {
		t.Errorf("the sandbox not kept: %v", err)
	}
	kept.MustExec(t, "true")
	if err := again.Destroy(ctx, kept.Spec.ID); err != nil {
		t.Fatalf("destroy: %v", err)
	}
}

// snapshotRestore: a snapshotted sandbox stops, and resumes from the
// state Snapshot returned with its files and processes, in the driver
// that snapshotted it and in a new one after a restart.
func snapshotRestore(t *testing.T, rt runtime.Runtime, newRT NewRuntime, net *network.Manager) {
	s, ok := rt.(runtime.Snapshotter)
	if !ok {
		t.Skipf("%s cannot snapshot", rt.Name())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sb := Start(t, rt, net, Options{})
	sb.MustExec(t, "echo kept > /root/state; nohup sleep 1000 >/dev/null 2>&1 &")
	for round, d := range []runtime.Snapshotter{s, newRT(t).(runtime.Snapshotter)} {
		st, err := s.Snapshot(ctx, sb.Spec.ID)
		if err != nil {
			t.Fatalf("round %d: snapshot: %v", round, err)
		}
		if err := sb.WaitGone(ctx); err != nil {
			t.Fatalf("round %d: after the snapshot: %v", round, err)
		}
		inst, err := d.Restore(ctx, sb.Spec, st)
		if err != nil {
			t.Fatalf("round %d: restore: %v", round, err)
		}
		if _, err := d.Restore(ctx, sb.Spec, inst.State); !errors.Is(err, errdefs.ErrConflict) {
			t.Errorf("round %d: restore of a running sandbox: %v, want ErrConflict", round, err)
		}
		sb.Instance, sb.Envd = inst, "http://"+inst.Envd.String()
		if err := WaitHealthy(ctx, sb.Envd); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if got := strings.TrimSpace(sb.MustExec(t, "cat /root/state; pgrep -c sleep")); got != "kept\n1" {
			t.Errorf("round %d: after restore: %q", round, got)
		}
		s = d
	}
	if err := s.(runtime.Runtime).Destroy(ctx, sb.Spec.ID); err != nil {
		t.Fatalf("destroy: %v", err)
	}
}
