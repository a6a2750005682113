package main

import (
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestReconcileAgentRestart runs `roost server` and one `roost agent` as
// real processes. The agent is killed (-9) with a running and a paused
// sandbox: both turn lost, and one is deleted while the host is down.
// The restarted agent re-adopts both; the control plane recovers the one
// it still knows (running and answering again, the paused one paused
// and resumable) and has the host destroy the deleted one once the
// create grace has passed. Nothing of the three stays on the host: no
// network namespace, cgroup or state directory.
func TestReconcileAgentRestart(t *testing.T) {
	_, bin, work := processTest(t, "a server, an agent and its sandboxes", "roost-reconcile.")

	const key = "roost_test_reconcile_0123456789abcdef"
	srv := startServer(t, work, bin, key, "--reconcile-interval", "500ms", "--down-after", "2", "--create-grace", "3s")
	serverDir, api := srv.dir, srv.api

	ag := startAgent(t, work, bin, "agent", serverDir, api)
	agentProc, agentDir, args := ag.p, ag.dir, ag.args

	type sandbox struct {
		ID              string `json:"sandboxID"`
		EnvdAccessToken string `json:"envdAccessToken"`
	}
	var running, paused, deleted sandbox
	for _, sb := range []*sandbox{&running, &paused, &deleted} {
		apiCall(t, "POST", api+"/v2/sandboxes", key, `{"templateID":"base","timeout":600}`, http.StatusCreated, sb)
	}
	t.Cleanup(func() {
		for _, sb := range []sandbox{running, paused} {
			req, _ := http.NewRequest("DELETE", api+"/sandboxes/"+sb.ID, nil)
			req.Header.Set("X-API-Key", key)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}
	})
	apiCall(t, "POST", api+"/sandboxes/"+paused.ID+"/pause", key, "", http.StatusNoContent, nil)

	agentProc.kill(t)
	for _, sb := range []sandbox{running, paused, deleted} {
		waitAPIState(t, api, key, sb.ID, "lost")
	}
	apiCall(t, "DELETE", api+"/sandboxes/"+deleted.ID, key, "", http.StatusNoContent, nil)
	apiCall(t, "GET", api+"/sandboxes/"+deleted.ID, key, "", http.StatusNotFound, nil)
	deletedDir := filepath.Join(agentDir, "sandboxes", deleted.ID)
	if _, err := os.Stat(deletedDir); err != nil {
		t.Fatalf("the killed agent's sandbox %s: %v", deleted.ID, err)
	}

	start(t, work, "agent-restarted", nil, bin, args...)
	restarted := time.Now()
	waitAPIState(t, api, key, running.ID, "running")
	waitAPIState(t, api, key, paused.ID, "paused")
	t.Logf("sandboxes recovered %v after the restart", time.Since(restarted).Round(time.Millisecond))
	wantHealth(t, api, running.ID, running.EnvdAccessToken)
	apiCall(t, "POST", api+"/v2/sandboxes/"+paused.ID+"/connect", key, `{"timeout":60}`, http.StatusCreated, nil)
	wantHealth(t, api, paused.ID, paused.EnvdAccessToken)

	// The agent removes a sandbox's state directory last when it
	// destroys it.
	for {
		_, err := os.Stat(deletedDir)
		if errors.Is(err, fs.ErrNotExist) {
			break
		}
		if time.Since(restarted) > time.Minute {
			t.Fatalf("sandbox %s, deleted while its host was down, still on the host a minute after it came back: %v", deleted.ID, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("sandbox deleted while its host was down destroyed there %v after the restart", time.Since(restarted).Round(time.Millisecond))
	wantHealth(t, api, running.ID, running.EnvdAccessToken)
	// Deleted here, while the agent runs: the cleanups stop it first.
	for _, sb := range []sandbox{running, paused} {
		apiCall(t, "DELETE", api+"/sandboxes/"+sb.ID, key, "", http.StatusNoContent, nil)
	}
	// The restarted agent removed all of each: the one deleted while it
	// was down, and the two it re-adopted.
	wantNoLeftovers(t, []string{running.ID, paused.ID, deleted.ID}, agentDir)
}

// waitAPIState waits until GET shows the sandbox in state.
func waitAPIState(t *testing.T, api, key, id, state string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		var got struct{ State string }
		apiCall(t, "GET", api+"/sandboxes/"+id, key, "", http.StatusOK, &got)
		if got.State == state {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox %s: state %q a minute on, want %q", id, got.State, state)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
