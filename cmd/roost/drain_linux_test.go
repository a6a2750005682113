package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDrainMoves drains the host of a sandbox with a file and a process
// counting, through `roost host drain` against a real server and two real
// agents: the sandbox is hibernated and moved to the other host, where a
// resume brings it back with its file, its process counting on from where
// it stopped, its tokens, and traffic through the proxy; the drained host
// runs nothing and is removed. A drain with no other host, and a sandbox
// paused without its memory, keep their sandboxes, and say why.
func TestDrainMoves(t *testing.T) {
	_, bin, work := processTest(t, "a server, two agents and a sandbox moving between them", "roost-drain.")
	const key = "roost_test_drain_0123456789abcdef"
	srv := startServer(t, work, bin, key, "--reconcile-interval", "1s")
	serverDir, api := srv.dir, srv.api
	tok, err := os.ReadFile(filepath.Join(serverDir, adminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(apiURLEnv, api)
	t.Setenv(adminTokenEnv, strings.TrimSpace(string(tok)))
	t.Setenv(apiKeyEnv, key)
	roost := func(args ...string) string {
		t.Helper()
		out, err := runRoost(t, args...)
		if err != nil {
			t.Fatalf("roost %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}

	first := startAgent(t, work, bin, "agent0", serverDir, api)
	type sandbox struct {
		ID              string `json:"sandboxID"`
		ClientID        string `json:"clientID"`
		EnvdAccessToken string `json:"envdAccessToken"`
	}
	var sb sandbox
	apiCall(t, "POST", api+"/v2/sandboxes", key, `{"templateID":"base","timeout":600,"secure":true}`, http.StatusCreated, &sb)
	t.Cleanup(func() { _, _ = runRoost(t, "sandbox", "kill", sb.ID) })
	roost("exec", sb.ID, "--", "sh", "-c",
		"echo moved-with-me > kept &&  nohup sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.05; done' >/dev/null 2>&1 &")
	time.Sleep(300 * time.Millisecond)

	// With no other host, the drain pauses and keeps.
	out := roost("host", "drain", first.reg.HostID)
	if !strings.Contains(out, "1 sandboxes paused, 0 failed; 0 moved to other hosts, 1 kept") || !strings.Contains(out, "no other namespace host") {
		t.Fatalf("drain with no other host: %s", out)
	}
	roost("host", "uncordon", first.reg.HostID)
	roost("sandbox", "resume", sb.ID)
	counted := counterOf(t, sb.ID, roost)

	second := startAgent(t, work, bin, "agent1", serverDir, api)
	drained := time.Now()
	out = roost("host", "drain", first.reg.HostID)
	t.Logf("drain: %v\n%s", time.Since(drained).Round(time.Millisecond), out)
	if !strings.Contains(out, "1 sandboxes paused, 0 failed; 1 moved to other hosts, 0 kept") ||
		!strings.Contains(out, sb.ID+" moved to host "+second.reg.HostID) {
		t.Fatalf("drain: %s", out)
	}
	var got struct {
		State    string `json:"state"`
		ClientID string `json:"clientID"`
	}
	apiCall(t, "GET", api+"/sandboxes/"+sb.ID, key, "", http.StatusOK, &got)
	if got.State != "paused" || got.ClientID != second.reg.HostID {
		t.Fatalf("after the drain: %+v, want paused on %s", got, second.reg.HostID)
	}
	resumed := time.Now()
	roost("sandbox", "resume", sb.ID)
	t.Logf("resumed on the other host in %v", time.Since(resumed).Round(time.Millisecond))
	wantHealth(t, api, sb.ID, sb.EnvdAccessToken)
	if kept := roost("exec", sb.ID, "--", "cat", "kept"); strings.TrimSpace(kept) != "moved-with-me" {
		t.Errorf("the moved sandbox's file: %q", kept)
	}
	after := counterOf(t, sb.ID, roost)
	time.Sleep(300 * time.Millisecond)
	if later := counterOf(t, sb.ID, roost); after <= counted || later <= after {
		t.Errorf("counter %d before the move, %d and %d after: want the process counting on", counted, after, later)
	}

	// The drained host holds nothing: it goes.
	roost("host", "rm", first.reg.HostID)
	if list := roost("host", "list"); strings.Contains(list, first.reg.HostID) {
		t.Fatalf("host list after rm: %s", list)
	}

	// A sandbox paused without its memory (halted: only its files kept)
	// is not moved: it stays, and the drain says why.
	var halted sandbox
	apiCall(t, "POST", api+"/v2/sandboxes", key, `{"templateID":"base","timeout":600}`, http.StatusCreated, &halted)
	t.Cleanup(func() { _, _ = runRoost(t, "sandbox", "kill", halted.ID) })
	roost("sandbox", "pause", "--keep-memory=false", halted.ID)
	third := startAgent(t, work, bin, "agent2", serverDir, api)
	out = roost("host", "drain", second.reg.HostID)
	if !strings.Contains(out, halted.ID+" kept") || !strings.Contains(out, sb.ID+" moved to host "+third.reg.HostID) {
		t.Fatalf("drain of a host with a halted sandbox: %s", out)
	}
}

// counterOf reads the number sandbox id's counting process last wrote.
func counterOf(t *testing.T, id string, roost func(...string) string) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimSpace(roost("exec", id, "--", "cat", "/tmp/counter")))
	if err != nil || n == 0 {
		t.Fatalf("counter of %s: %d, %v", id, n, err)
	}
	return n
}
