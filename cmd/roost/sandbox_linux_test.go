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
// (namespace runtime): get shows the runtime and its capabilities,
// hibernate and resume bring the sandbox back, snapshot makes a snapshot
// that `roost snapshot` lists and removes, and fork makes sandboxes with
// the sandbox's files, each its own.
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
		*sb.Capabilities != (client.Capabilities{Pause: true, Snapshot: true, Fork: true}) || sb.Hibernated == nil || *sb.Hibernated {
		t.Fatalf("get: %s", out)
	}

	// Hibernated (CRIU), then resumed.
	if out, err = roost("hibernate", id); err != nil || out != id+" hibernated (namespace runtime); resume restores it\n" {
		t.Fatalf("roost sandbox hibernate: %v, output %q", err, out)
	}
	if _, err := roost("resume", id); err != nil {
		t.Fatalf("roost sandbox resume: %v", err)
	}
	if _, err := roost("hibernate", "sbnosuchsandbox"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("hibernate of an unknown sandbox: %v", err)
	}
	// A snapshot of its files: a template to create from.
	if out, err := roost("snapshot", "--name", "cli-snap", id); err != nil || out != "cli-snap:default\n" {
		t.Fatalf("roost sandbox snapshot: %v, output %q", err, out)
	}
	if _, err := roost("snapshot", "sbnosuchsandbox"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("snapshot of an unknown sandbox: %v", err)
	}
	snaps := newSnapshotsCmd()
	var listed bytes.Buffer
	snaps.SetArgs([]string{"list", "--sandbox", id})
	snaps.SetOut(&listed)
	if err := snaps.ExecuteContext(t.Context()); err != nil || listed.String() != "cli-snap:default\n" {
		t.Fatalf("roost snapshot list: %v, output %q", err, listed.String())
	}
	snaps.SetArgs([]string{"rm", "cli-snap:default"})
	if err := snaps.ExecuteContext(t.Context()); err != nil {
		t.Fatalf("roost snapshot rm: %v", err)
	}
	// Fork: two sandboxes, each with the sandbox's files and its own ID.
	out, err = roost("fork", "-n", "2", "--timeout", "2m", id)
	forks := strings.Fields(out)
	if err != nil || len(forks) != 2 || forks[0] == forks[1] || forks[0] == id {
		t.Fatalf("roost sandbox fork: %v, output %q", err, out)
	}
	for _, f := range forks {
		t.Cleanup(func() { _, _ = roost("kill", f) })
		exec := newExecCmd()
		var got bytes.Buffer
		exec.SetArgs([]string{f, "--", "hostname"})
		exec.SetOut(&got)
		if err := exec.ExecuteContext(t.Context()); err != nil || strings.TrimSpace(got.String()) != f {
			t.Errorf("fork %s: hostname %q, %v", f, got.String(), err)
		}
	}
	out, err = roost("list", "--json")
	if err != nil || !strings.Contains(out, `"state": "running"`) {
		t.Fatalf("list after the snapshot: %v: %s", err, out)
	}
}
