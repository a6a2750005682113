package main

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/store"
)

// TestHostCommands: roost host list, cordon, uncordon, drain and rm
// against a real control plane with a host whose agent cannot be
// reached (a closed loopback port), so a sandbox on it cannot be paused:
// drain --wait waits for it to end.
func TestHostCommands(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	st, err := openStore(context.Background(), "", dir, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.UpsertHost(context.Background(), store.Host{ID: "h1", Name: "rack1", URL: "https://127.0.0.1:1",
		Runtime: "namespace", CPUs: 8, MemoryMB: 16384, State: store.HostReady}); err != nil {
		t.Fatal(err)
	}
	serveOperator(t, st, dir)
	run := func(args ...string) (string, error) { return runRoost(t, args...) }
	want := func(out string, err error, parts ...string) {
		t.Helper()
		if err != nil {
			t.Fatalf("%q: %v", out, err)
		}
		for _, p := range parts {
			if !strings.Contains(out, p) {
				t.Fatalf("output %q lacks %q", out, p)
			}
		}
	}
	out, err := run("host", "list")
	want(out, err, "CORDONED", "h1", "rack1", "ready", "false")
	out, err = run("host", "rm", "h1")
	if err == nil || !strings.Contains(err.Error(), "not cordoned") {
		t.Fatalf("rm of an uncordoned host: %q, %v", out, err)
	}
	out, err = run("host", "cordon", "h1")
	want(out, err, "host h1: cordoned true")
	out, err = run("host", "uncordon", "h1")
	want(out, err, "host h1: cordoned false")
	out, err = run("host", "drain", "h1")
	want(out, err, "host h1 cordoned: 0 sandboxes paused, 0 failed")
	out, err = run("host", "list", "--json")
	want(out, err, `"cordoned": true`)

	ctx := context.Background()
	if err := st.CreateTeam(ctx, store.Team{ID: "t", Name: "t"}); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateSandbox(ctx, store.Sandbox{ID: "sb1", TeamID: "t", HostID: "h1", State: store.SandboxRunning}); err != nil {
		t.Fatal(err)
	}
	out, err = run("host", "drain", "h1", "--wait", "1s")
	if err == nil || !strings.Contains(err.Error(), "host h1 still runs 1 sandboxes after 1s") ||
		!strings.Contains(out, "0 sandboxes paused, 1 failed") || !strings.Contains(out, "waiting for 1 sandboxes") {
		t.Fatalf("drain --wait of a host whose sandbox cannot be paused: %q, %v", out, err)
	}
	go func() {
		time.Sleep(time.Second)
		_, _ = st.UpdateSandbox(ctx, "sb1", func(sb *store.Sandbox) error { sb.State = store.SandboxStopped; return nil })
	}()
	out, err = run("host", "drain", "h1", "--wait", "30s")
	want(out, err, "waiting for 1 sandboxes still running on host h1", "host h1 drained: nothing runs on it")
	out, err = run("host", "rm", "h1")
	want(out, err)
	out, err = run("host", "list")
	if err != nil || strings.Contains(out, "h1") {
		t.Fatalf("list after rm: %q, %v", out, err)
	}
	if _, err := run("host", "cordon", "nosuchhost"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("cordon of an unknown host: %v", err)
	}
}
