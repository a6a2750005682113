package main

import (
	"bytes"
	"context"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"roost.dev/roost/controlplane"
	"roost.dev/roost/store"
)

// The operator's commands against a real control plane (no host: teams,
// keys, quotas, the audit log and webhooks need none).
func TestOperatorCommands(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	st, err := openStore(context.Background(), "", dir, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cp, tok := serveOperator(t, st, dir)
	if !tok.created || tok.file != filepath.Join(dir, adminTokenFile) {
		t.Fatalf("first admin token: %+v", tok)
	}
	again, err := ensureAdminToken(context.Background(), cp, dir)
	if err != nil || again.created || again.value != tok.value {
		t.Fatalf("second start: %+v, %v", again, err)
	}
	run := func(args ...string) (string, error) { return runRoost(t, args...) }
	out, err := run("team", "create", "alpha", "--quota", "sandboxes=3,timeout=1h")
	if err != nil || !strings.Contains(out, "API key, shown this once: e2b_") {
		t.Fatalf("team create: %q, %v", out, err)
	}
	teamID := strings.Fields(out)[1]
	key := strings.TrimSpace(out[strings.LastIndex(out, " ")+1:])
	out, err = run("team", "quota", teamID, "vcpus=6", "timeout=default")
	for _, want := range []string{"sandboxes         3        team", "vcpus             6        team", "timeout           86400    default"} {
		if err != nil || !strings.Contains(out, want) {
			t.Fatalf("team quota lacks %q: %q, %v", want, out, err)
		}
	}
	if _, err := run("team", "quota", teamID, "gpus=1"); err == nil {
		t.Fatal("an unknown limit was set")
	}
	if _, err := run("team", "quota", "team_nope"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("quota of an unknown team: %v", err)
	}
	out, err = run("team", "list")
	if err != nil || !strings.Contains(out, teamID) || !strings.Contains(out, "alpha") {
		t.Fatalf("team list: %q, %v", out, err)
	}
	out, err = run("key", "create", "--team", teamID, "--name", "ci")
	if err != nil || !strings.HasPrefix(out, "e2b_") {
		t.Fatalf("key create --team: %q, %v", out, err)
	}
	out, err = run("key", "list", "--team", teamID)
	if err != nil || !strings.Contains(out, "ci") || !strings.Contains(out, "default") {
		t.Fatalf("key list --team: %q, %v", out, err)
	}
	// The team's own key sees its audit log: the operator's acts on it.
	t.Setenv(apiKeyEnv, key)
	out, err = run("audit")
	if err != nil || !strings.Contains(out, "team.create") || !strings.Contains(out, "key.create") || !strings.Contains(out, "team.quota") {
		t.Fatalf("audit: %q, %v", out, err)
	}
	if out, err = run("webhook", "create", "http://10.0.0.1/hook", "--secret", "secret-123"); err == nil {
		t.Fatalf("a webhook to a private address was registered: %q", out)
	}
	out, err = run("team", "rm", teamID)
	if err != nil {
		t.Fatalf("team rm: %q, %v", out, err)
	}
	if _, err := run("key", "list"); err == nil {
		t.Fatal("the removed team's key still works")
	}
}

// serveOperator serves a control plane on st over HTTP, with the
// operator's token made in dir, for the CLI ($ROOST_API_URL and
// $ROOST_ADMIN_TOKEN point at them for t).
func serveOperator(t *testing.T, st store.Store, dir string) (*controlplane.Server, apiKey) {
	t.Helper()
	cp, err := controlplane.New(controlplane.Config{}, st, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Close)
	t.Setenv(adminTokenEnv, "")
	tok, err := ensureAdminToken(context.Background(), cp, dir)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(cp.Handler())
	t.Cleanup(srv.Close)
	t.Setenv(apiURLEnv, srv.URL)
	t.Setenv(adminTokenEnv, tok.value)
	return cp, tok
}

// runRoost runs the command line with args in this process and returns
// what it printed.
func runRoost(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}
