package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"roost.dev/roost/client"
	"roost.dev/roost/testenv"
)

// TestSandboxSnapshotCLI runs `roost sandbox` against the real stack
// (namespace runtime): get shows the runtime and its capabilities, and
// snapshot fails with the API's reason, leaving the sandbox running.
func TestSandboxSnapshotCLI(t *testing.T) {
	env := testenv.Start(t)
	t.Setenv(apiURLEnv, env.URL)
	t.Setenv(apiKeyEnv, env.APIKey)
	roost := func(args ...string) (string, error) {
		t.Helper()
		cmd := newSandboxCmd()
		var out, errb bytes.Buffer
		cmd.SetArgs(args)
		cmd.SetOut(&out)
		cmd.SetErr(&errb)
		cmd.SilenceUsage = true
		err := cmd.ExecuteContext(t.Context())
		return out.String(), err
	}

	out, err := roost("create", "--timeout", "2m")
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	id := strings.TrimSpace(out)
	t.Cleanup(func() { _, _ = roost("kill", id) })

	out, err = roost("get", id)
	var sb client.Sandbox
	if err != nil || json.Unmarshal([]byte(out), &sb) != nil {
		t.Fatalf("get: %v: %s", err, out)
	}
	if sb.ID != id || sb.State != "running" || sb.Runtime != "namespace" || sb.Capabilities == nil ||
		*sb.Capabilities != (client.Capabilities{Pause: true}) || sb.Hibernated == nil || *sb.Hibernated {
		t.Fatalf("get: %s", out)
	}

	for _, args := range [][]string{{"snapshot", id}, {"snapshot", "--json", id}} {
		out, err = roost(args...)
		if err == nil || !strings.Contains(err.Error(), "409: sandbox "+id+" runs on the namespace runtime, which cannot snapshot (it can pause)") || out != "" {
			t.Fatalf("roost sandbox %v: %v, output %q", args, err, out)
		}
	}
	if _, err := roost("snapshot", "sbnosuchsandbox"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("snapshot of an unknown sandbox: %v", err)
	}
	// Fork needs a runtime that captures memory; the refusal says which.
	if out, err := roost("fork", "-n", "2", id); err == nil || !strings.Contains(err.Error(), "501: sandbox "+id+" runs on the namespace runtime") || out != "" {
		t.Fatalf("roost sandbox fork: %v, output %q", err, out)
	}
	out, err = roost("list", "--json")
	if err != nil || !strings.Contains(out, `"state": "running"`) {
		t.Fatalf("list after the refused snapshot: %v: %s", err, out)
	}
}
