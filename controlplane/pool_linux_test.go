package controlplane_test

import (
	"net/http"
	"testing"

	"roost.dev/roost/agent"
	"roost.dev/roost/controlplane"
	"roost.dev/roost/store"
	"roost.dev/roost/store/storetest"
)

// TestWarmPoolREST: through the REST API, a create served by the warm
// pool is a sandbox like any other: its env vars, metadata and ID reach
// it, lists show it, and warm sandboxes count against no team's quota
// and show in no list.
func TestWarmPoolREST(t *testing.T) {
	requireNamespace(t)
	e := newTestenvAgent(t, controlplane.Config{Local: localAgent(), TeamQuota: store.Quota{store.LimitSandboxes: 2}},
		storetest.SQLiteURL(t), namespaceRuntime, testSlots, func(c *agent.Config) { c.WarmPools = map[string]int{"base": 2} })
	create := func() (created, int) {
		r := e.do("POST", "/v2/sandboxes", e.key, map[string]any{
			"templateID": "base", "timeout": 120, "envVars": map[string]string{"GREETING": "hello"},
			"metadata": map[string]string{"kind": "pooled"},
		})
		var c created
		if r.status == http.StatusCreated {
			r.decode(t, &c)
		}
		return c, r.status
	}
	first, status := create() // cold: the pool learns what to start
	if status != http.StatusCreated {
		t.Fatalf("first create: %d", status)
	}
	waitWarm(t, e.agent, 2)
	second, status := create()
	if status != http.StatusCreated {
		t.Fatalf("second create: %d", status)
	}
	if _, hits, _ := e.agent.PoolStats(); hits != 1 {
		t.Fatalf("the pool served %d creates, want 1", hits)
	}
	res := e.exec(t, second.SandboxID, map[string]any{"cmd": "echo $GREETING $(hostname)"})
	if want := "hello " + second.SandboxID + "\n"; res.Stdout != want {
		t.Errorf("claimed sandbox says %q, want %q", res.Stdout, want)
	}
	var listed []struct {
		SandboxID string            `json:"sandboxID"`
		Metadata  map[string]string `json:"metadata"`
	}
	e.do("GET", "/v2/sandboxes", e.key, nil).want(t, http.StatusOK).decode(t, &listed)
	if len(listed) != 2 {
		t.Fatalf("listed %d sandboxes, want the 2 created: %+v", len(listed), listed)
	}
	for _, l := range listed {
		if l.Metadata["kind"] != "pooled" {
			t.Errorf("sandbox %s lists metadata %v", l.SandboxID, l.Metadata)
		}
	}
	// Two warm sandboxes run beside the two created; the quota of two
	// counts only the team's.
	waitWarm(t, e.agent, 2)
	if _, status := create(); status != http.StatusTooManyRequests {
		t.Errorf("a third create with a quota of 2: %d, want 429", status)
	}
	for _, c := range []created{first, second} {
		e.do("DELETE", "/sandboxes/"+c.SandboxID, e.key, nil).want(t, http.StatusNoContent)
	}
	if _, status := create(); status != http.StatusCreated {
		t.Errorf("a create after the deletes: %d", status)
	}
}
