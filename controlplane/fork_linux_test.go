package controlplane_test

import (
	"net/http"
	"testing"
	"time"

	"roost.dev/roost/controlplane"
)

// forkResult is E2B's SandboxForkResult.
type forkResult struct {
	Sandbox *created `json:"sandbox"`
	Error   *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// TestForkQEMU: fork on a qemu host (see testForkAPI).
func TestForkQEMU(t *testing.T) { testForkAPI(t, newQEMUTestenv(t)) }

// TestForkNamespace: fork on a namespace host (see testForkAPI).
func TestForkNamespace(t *testing.T) { testForkAPI(t, newTestenv(t, controlplane.Config{})) }

// testForkAPI: POST /sandboxes/{id}/fork makes running sandboxes with the
// source's files, metadata and their own tokens and timeout, and refuses
// what it cannot do.
func testForkAPI(t *testing.T, e *testenv) {
	src := e.create(t, map[string]any{"templateID": "base", "timeout": 300, "memoryMB": 256, "metadata": map[string]string{"run": "r1"}})
	if res := e.exec(t, src.SandboxID, map[string]any{"cmd": "echo kept > /tmp/state"}); res.ExitCode != 0 {
		t.Fatalf("write a file: %+v", res)
	}
	began := time.Now()
	var results []forkResult
	e.do("POST", "/sandboxes/"+src.SandboxID+"/fork", e.key, map[string]any{"count": 2, "timeout": 60}).want(t, http.StatusCreated).decode(t, &results)
	t.Logf("fork ×2: %v", time.Since(began))
	if len(results) != 2 {
		t.Fatalf("fork results %+v", results)
	}
	seen := map[string]bool{src.SandboxID: true}
	for i, r := range results {
		if r.Sandbox == nil || r.Error != nil {
			t.Fatalf("fork %d: %+v", i, r)
		}
		fk := r.Sandbox
		if seen[fk.SandboxID] || fk.EnvdAccessToken == "" || fk.EnvdAccessToken == src.EnvdAccessToken || fk.TemplateID != src.TemplateID {
			t.Errorf("fork %d: %+v (source %+v)", i, fk, src)
		}
		seen[fk.SandboxID] = true
		l := e.get(t, fk.SandboxID)
		if l.State != "running" || l.Metadata["run"] != "r1" || l.MemoryMB != 256 || time.Until(l.EndAt) > 61*time.Second {
			t.Errorf("fork %d listed as %+v", i, l)
		}
		if res := e.exec(t, fk.SandboxID, map[string]any{"args": []string{"cat", "/tmp/state"}}); res.Stdout != "kept\n" {
			t.Errorf("fork %d: %+v, want the source's file", i, res)
		}
	}
	if l := e.get(t, src.SandboxID); l.State != "running" {
		t.Errorf("the source after the fork: %+v", l)
	}

	for _, bad := range []struct {
		id     string
		body   map[string]any
		status int
	}{
		{src.SandboxID, map[string]any{"count": 0}, http.StatusBadRequest},
		{src.SandboxID, map[string]any{"count": 101}, http.StatusBadRequest},
		{src.SandboxID, map[string]any{"timeout": 0}, http.StatusBadRequest},
		{"no-such-sandbox", nil, http.StatusNotFound},
	} {
		e.do("POST", "/sandboxes/"+bad.id+"/fork", e.key, bad.body).want(t, bad.status)
	}
	e.do("POST", "/sandboxes/"+src.SandboxID+"/pause", e.key, nil).want(t, http.StatusNoContent)
	e.do("POST", "/sandboxes/"+src.SandboxID+"/fork", e.key, nil).want(t, http.StatusConflict).wantMessage(t, "only a running sandbox")
	for id := range seen {
		e.do("DELETE", "/sandboxes/"+id, e.key, nil).want(t, http.StatusNoContent)
	}
}
