package controlplane_test

import (
	"net/http"
	"strings"
	"testing"

	"roost.dev/roost/controlplane"
)

// TestAttackHostileClient: a client with a valid key of another team, or
// with no key, goes after a sandbox through every route that names it
// (REST, roost's exec and files, envd and private ports through the
// proxy), and sends oversized and malformed requests. Every one is
// refused with a 4xx naming nothing of the sandbox, and the sandbox and
// the API keep working for their owner.
func TestAttackHostileClient(t *testing.T) {
	e := newTestenv(t, controlplane.Config{})
	other, err := e.cp.CreateTeamWithKey(t.Context(), "intruders")
	if err != nil {
		t.Fatal(err)
	}
	c := e.create(t, map[string]any{"timeout": 600, "secure": true,
		"network": map[string]any{"allowPublicTraffic": false}})
	id := c.SandboxID
	t.Cleanup(func() { e.do("DELETE", "/sandboxes/"+id, e.key, nil) })
	tok := []string{"E2b-Traffic-Access-Token", c.TrafficAccessToken}
	e.serveDir(t, id, tok...)

	t.Run("OtherTeam", func(t *testing.T) {
		for _, rt := range []struct{ method, path string }{
			{"GET", "/sandboxes/" + id},
			{"DELETE", "/sandboxes/" + id},
			{"POST", "/sandboxes/" + id + "/pause"},
			{"POST", "/sandboxes/" + id + "/resume"},
			{"POST", "/sandboxes/" + id + "/connect"},
			{"POST", "/sandboxes/" + id + "/timeout"},
			{"POST", "/sandboxes/" + id + "/refreshes"},
			{"GET", "/sandboxes/" + id + "/logs"},
			{"GET", "/v2/sandboxes/" + id + "/logs"},
			{"GET", "/sandboxes/" + id + "/metrics"},
			{"GET", "/v1/sandboxes/" + id + "/metrics"},
			{"GET", "/v1/sandboxes/" + id},
			{"POST", "/v1/sandboxes/" + id + "/exec"},
			{"GET", "/v1/sandboxes/" + id + "/files?path=/etc/hostname"},
		} {
			var body any
			if rt.method == "POST" {
				body = map[string]any{"timeout": 60, "cmd": "id"}
			}
			r := e.do(rt.method, rt.path, other, body)
			if r.status != http.StatusNotFound {
				t.Errorf("%s %s with another team's key: %d %s, want 404", rt.method, rt.path, r.status, r.body)
			}
			if r = e.do(rt.method, rt.path, "", body); r.status != http.StatusUnauthorized {
				t.Errorf("%s %s without a key: %d %s, want 401", rt.method, rt.path, r.status, r.body)
			}
		}
		var ms struct {
			Sandboxes map[string]any `json:"sandboxes"`
		}
		e.do("GET", "/sandboxes/metrics?sandbox_ids="+id, other, nil).want(t, http.StatusOK).decode(t, &ms)
		if len(ms.Sandboxes) != 0 {
			t.Errorf("another team reads the sandbox's metrics: %v", ms.Sandboxes)
		}
	})

	t.Run("ProxyWithoutTokens", func(t *testing.T) {
		// envd: only /health without the sandbox's access token.
		e.via(t, nil, "/proxy/"+id+"/49983/envs", "").want(t, http.StatusUnauthorized)
		e.via(t, nil, "/proxy/"+id+"/49983/files?path=/etc/hostname", "", "X-Access-Token", "e2b_"+strings.Repeat("0", 40)).want(t, http.StatusUnauthorized)
		e.via(t, nil, "/proxy/"+id+"/49983/files?path=/etc/hostname", "", "X-API-Key", other).want(t, http.StatusUnauthorized)
		// A private port: only with the sandbox's traffic token.
		for _, hdr := range [][]string{nil, {"E2b-Traffic-Access-Token", "x"}, {"X-API-Key", other}} {
			e.via(t, nil, "/proxy/"+id+"/8000/hello.txt", "", hdr...).want(t, http.StatusForbidden)
			e.via(t, nil, "/hello.txt", "8000-"+id+".localhost", hdr...).want(t, http.StatusForbidden)
		}
	})

	t.Run("Malformed", func(t *testing.T) {
		huge := rawBody(`{"templateID":"base","metadata":{"a":"` + strings.Repeat("x", 4<<20) + `"}}`)
		if r := e.do("POST", "/v2/sandboxes", e.key, huge); r.status < 400 || r.status >= 500 {
			t.Errorf("a 4 MiB create body: %d %.200s, want 4xx", r.status, r.body)
		}
		r := e.do("GET", "/sandboxes", e.key, nil, "X-Big", strings.Repeat("y", 2<<20))
		if r.status != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("2 MiB of headers: %d, want 431", r.status)
		}
		for _, p := range []string{
			"/sandboxes/..%2f..%2fetc%2fpasswd",
			"/sandboxes/" + id + "%00",
			"/proxy/" + id + "/0/",
			"/proxy/" + id + "/99999/",
			"/proxy/..%2f" + id + "/8000/hello.txt",
			"/v1/sandboxes/" + id + "/files?path=../../../../etc/passwd",
		} {
			r := e.do("GET", p, other, nil)
			if r.status < 400 || r.status >= 500 || strings.Contains(string(r.body), "root:") {
				t.Errorf("GET %s: %d %.200s, want a 4xx", p, r.status, r.body)
			}
		}
	})

	// The owner is unaffected.
	if r := e.via(t, nil, "/proxy/"+id+"/8000/hello.txt", "", tok...).want(t, http.StatusOK); string(r.body) != "hello\n" {
		t.Fatalf("the owner's private port: %q", r.body)
	}
	if res := e.exec(t, id, map[string]any{"cmd": "echo still-here"}); !strings.Contains(res.Stdout, "still-here") {
		t.Fatalf("exec after the attacks: %+v", res)
	}
}
