package controlplane

import (
	"net/http"
	"testing"

	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
)

// A tree a host is still making is listed with what the host is doing:
// base at a host's first start is building, with its build's stage, and
// E2B's list says building too.
func TestTemplateProgress(t *testing.T) {
	e := newTmplEnv(t)
	e.agent.mu.Lock()
	e.agent.trees = nil
	e.agent.making = []*hostagentv1.TemplateInProgress{{Name: "base", Progress: "[3/7] retrieving packages"}}
	e.agent.mu.Unlock()

	var v1 []v1TemplateJSON
	e.want(http.StatusOK, "GET", "/v1/templates", nil, &v1)
	if len(v1) != 1 || v1[0].Name != "base" || v1[0].Status != "building" || v1[0].Progress != "h1: [3/7] retrieving packages" || len(v1[0].Hosts) != 0 {
		t.Fatalf("GET /v1/templates while base builds = %+v", v1)
	}
	var e2b []e2bTemplateJSON
	e.want(http.StatusOK, "GET", "/v2/templates", nil, &e2b)
	if len(e2b) != 1 || e2b[0].TemplateID != "base" || e2b[0].BuildStatus != "building" {
		t.Fatalf("GET /v2/templates while base builds = %+v", e2b)
	}
	e.want(http.StatusNotFound, "GET", "/templates/base", nil, nil)

	// Once the host has it, it is ready, with no progress.
	e.agent.mu.Lock()
	e.agent.trees = []*hostagentv1.Template{{Name: "base", Source: "debootstrap bookworm", SizeBytes: 100}}
	e.agent.making = nil
	e.agent.mu.Unlock()
	v1 = nil
	e.want(http.StatusOK, "GET", "/v1/templates", nil, &v1)
	if len(v1) != 1 || v1[0].Status != "ready" || v1[0].Progress != "" || len(v1[0].Hosts) != 1 {
		t.Fatalf("GET /v1/templates once base is built = %+v", v1)
	}
}
