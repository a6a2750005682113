package controlplane_test

import (
	"net/http"
	"testing"

	"roost.dev/roost/controlplane"
)

// TestHostOperations: the operator cordons a host (creates find no room,
// until it is uncordoned), drains it (its running sandboxes paused, of
// any team), and removes a cordoned host without sandboxes; a team's key
// does none of it, and a host that holds sandboxes or is not cordoned is
// not removed.
func TestHostOperations(t *testing.T) {
	e := newTestenv(t, controlplane.Config{})
	adm := e.adminToken(t)
	var host struct {
		ID       string
		Cordoned bool
	}
	create := func(want int) string {
		t.Helper()
		var c created
		r := e.do("POST", "/v2/sandboxes", e.key, map[string]any{"templateID": "base", "timeout": 600}).want(t, want)
		if want == http.StatusCreated {
			r.decode(t, &c)
		}
		return c.SandboxID
	}

	e.do("POST", "/v1/hosts/host1/cordon", e.key, nil).want(t, http.StatusUnauthorized)
	e.admin(adm, "POST", "/v1/hosts/host1/cordon", "", nil).want(t, http.StatusOK).decode(t, &host)
	if host.ID != "host1" || !host.Cordoned {
		t.Fatalf("cordon answered %+v", host)
	}
	create(http.StatusServiceUnavailable)
	e.admin(adm, "POST", "/v1/hosts/host1/uncordon", "", nil).want(t, http.StatusOK).decode(t, &host)
	if host.Cordoned {
		t.Fatalf("uncordon answered %+v", host)
	}
	running, other := create(http.StatusCreated), create(http.StatusCreated)
	e.do("DELETE", "/sandboxes/"+other, e.key, nil).want(t, http.StatusNoContent)

	var drained struct {
		Host   struct{ Cordoned bool }
		Paused []string
		Failed map[string]string
	}
	e.admin(adm, "POST", "/v1/hosts/host1/drain", "", nil).want(t, http.StatusOK).decode(t, &drained)
	if !drained.Host.Cordoned || len(drained.Paused) != 1 || drained.Paused[0] != running || len(drained.Failed) != 0 {
		t.Fatalf("drain answered %+v, want %s paused and the host cordoned", drained, running)
	}
	var sb struct{ State string }
	e.do("GET", "/sandboxes/"+running, e.key, nil).want(t, http.StatusOK).decode(t, &sb)
	if sb.State != "paused" {
		t.Errorf("drained sandbox is %s, want paused", sb.State)
	}
	e.admin(adm, "DELETE", "/v1/hosts/host1", "", nil).want(t, http.StatusConflict)
	e.admin(adm, "DELETE", "/v1/hosts/nosuchhost", "", nil).want(t, http.StatusNotFound)
	e.admin(adm, "POST", "/v1/hosts/nosuchhost/cordon", "", nil).want(t, http.StatusNotFound)

	// A second host, with no sandboxes: removed once cordoned.
	second := e.registerTLSHost(t, map[string]any{"name": "second", "runtime": "namespace", "cpus": 2, "memoryMB": 1024, "maxSandboxes": 3}).HostID
	e.admin(adm, "DELETE", "/v1/hosts/"+second, "", nil).want(t, http.StatusConflict)
	e.admin(adm, "POST", "/v1/hosts/"+second+"/cordon", "", nil).want(t, http.StatusOK)
	e.do("DELETE", "/v1/hosts/"+second, e.key, nil).want(t, http.StatusUnauthorized)
	e.admin(adm, "DELETE", "/v1/hosts/"+second, "", nil).want(t, http.StatusNoContent)
	var hosts []struct{ ID string }
	e.admin(adm, "GET", "/v1/hosts", "", nil).want(t, http.StatusOK).decode(t, &hosts)
	if len(hosts) != 1 || hosts[0].ID != "host1" {
		t.Errorf("hosts after the removal: %+v", hosts)
	}
	e.admin(adm, "POST", "/v1/hosts/host1/uncordon", "", nil).want(t, http.StatusOK)
	e.do("DELETE", "/sandboxes/"+running, e.key, nil).want(t, http.StatusNoContent)
}
