package controlplane_test

import (
	"bytes"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/controlplane"
	"roost.dev/roost/store/storetest"
)

// TestLegacyRoutes drives E2B's unversioned and deprecated sandbox routes,
// the ones its SDKs before JS 2.51.0 call, and the 501s of E2B's routes
// roost does not serve yet.
func TestLegacyRoutes(t *testing.T) {
	storetest.Run(t, func(t *testing.T, dbURL string) {
		testLegacyRoutes(t, newTestenvDB(t, controlplane.Config{}, dbURL))
	})
}

func testLegacyRoutes(t *testing.T, e *testenv) {
	other, err := e.cp.CreateTeamWithKey(t.Context(), "other")
	if err != nil {
		t.Fatal(err)
	}
	const unknown = "inosuchsandbox0"

	// Create through the unversioned route: E2B's Sandbox, 201.
	var c created
	e.do("POST", "/sandboxes", e.key, map[string]any{"templateID": "base", "timeout": 120,
		"metadata": map[string]string{"app": "legacy"}}).want(t, http.StatusCreated).decode(t, &c)
	if len(c.SandboxID) < 13 || c.TemplateID != "base" || c.ClientID != "host1" || c.EnvdVersion == "" ||
		c.EnvdAccessToken == "" || c.TrafficAccessToken == "" || c.Domain != "localhost" {
		t.Fatalf("create response %+v", c)
	}
	id := c.SandboxID
	t.Cleanup(func() { e.do("DELETE", "/sandboxes/"+id, e.key, nil) })
	if l := e.get(t, id); l.State != "running" || l.Metadata["app"] != "legacy" {
		t.Fatalf("created sandbox %+v", l)
	}
	paused := e.create(t, map[string]any{"metadata": map[string]string{"app": "legacy-paused"}}).SandboxID
	t.Cleanup(func() { e.do("DELETE", "/sandboxes/"+paused, e.key, nil) })
	e.do("POST", "/sandboxes/"+paused+"/pause", e.key, nil).want(t, http.StatusNoContent)

	t.Run("Errors", func(t *testing.T) {
		tests := []struct {
			method, path string
			key          string // "" is e.key
			body         any
			want         int
		}{
			{"GET", "/sandboxes?metadata=" + url.QueryEscape("=x"), "", nil, http.StatusBadRequest},
			{"GET", "/sandboxes", "roost_notakey", nil, http.StatusUnauthorized},
			{"GET", "/sandboxes", "e2b_" + strings.Repeat("0", 40), nil, http.StatusUnauthorized},

			{"POST", "/sandboxes/" + unknown + "/resume", "", map[string]any{"timeout": 60}, http.StatusNotFound},
			{"POST", "/sandboxes/" + paused + "/resume", other, map[string]any{"timeout": 60}, http.StatusNotFound},
			{"POST", "/sandboxes/" + paused + "/resume", "", rawBody(`not json`), http.StatusBadRequest},
			{"POST", "/sandboxes/" + id + "/resume", "", map[string]any{"timeout": 60}, http.StatusConflict},

			{"POST", "/sandboxes/" + unknown + "/refreshes", "", map[string]any{"duration": 60}, http.StatusNotFound},
			{"POST", "/sandboxes/" + id + "/refreshes", other, map[string]any{"duration": 60}, http.StatusNotFound},
			{"POST", "/sandboxes/" + paused + "/refreshes", "", map[string]any{"duration": 60}, http.StatusNotFound},
			{"POST", "/sandboxes/" + id + "/refreshes", "", rawBody(`{"duration":}`), http.StatusBadRequest},
			{"POST", "/sandboxes/" + id + "/refreshes", "", map[string]any{"duration": 3601}, http.StatusBadRequest},
		}
		// Create and connect answer alike on E2B's two route forms.
		for _, create := range []string{"/sandboxes", "/v2/sandboxes"} {
			tests = append(tests, []struct {
				method, path string
				key          string
				body         any
				want         int
			}{
				{"POST", create, "", rawBody(`{"templateID":`), http.StatusBadRequest},
				{"POST", create, "", rawBody(`[1, 2]`), http.StatusBadRequest},
				{"POST", create, "", map[string]any{"timeout": -1}, http.StatusBadRequest},
				{"POST", create, "", map[string]any{"network": map[string]any{"denyOut": []string{"0.0.0.0/0"}}}, http.StatusBadRequest},
				{"POST", create, "", map[string]any{"volumeMounts": []any{map[string]string{"name": "v", "path": "/proc/v"}}}, http.StatusBadRequest},
				{"POST", create, "", map[string]any{"volumeMounts": []any{map[string]string{"name": "nosuchvolume", "path": "/data"}}}, http.StatusNotFound},
				{"POST", create, "", map[string]any{"templateID": "nosuchtemplate"}, http.StatusNotFound},
				{"POST", create, "roost_notakey", map[string]any{}, http.StatusUnauthorized},
				{"POST", create, "e2b_" + strings.Repeat("0", 40), map[string]any{}, http.StatusUnauthorized},
				{"POST", create + "/" + unknown + "/connect", "", map[string]any{"timeout": 60}, http.StatusNotFound},
				{"POST", create + "/" + id + "/connect", other, map[string]any{"timeout": 60}, http.StatusNotFound},
				{"POST", create + "/" + id + "/connect", "", rawBody(`{"timeout":`), http.StatusBadRequest},
				{"POST", create + "/" + id + "/connect", "", map[string]any{"timeout": -5}, http.StatusBadRequest},
			}...)
		}
		for _, tt := range tests {
			key := tt.key
			if key == "" {
				key = e.key
			}
			t.Run(tt.method+" "+tt.path, func(t *testing.T) {
				e.do(tt.method, tt.path, key, tt.body).want(t, tt.want)
			})
		}
		if l := e.get(t, id); l.State != "running" {
			t.Fatalf("state %q after refused calls", l.State)
		}
		// A refused setting is named, and no sandbox is left behind.
		r := e.do("POST", "/sandboxes", e.key, map[string]any{"metadata": map[string]string{"app": "refused"},
			"network": map[string]any{"allowOut": []string{"10.0.0.0/8"}}}).want(t, http.StatusBadRequest)
		if !bytes.Contains(r.body, []byte("network.allowOut")) {
			t.Errorf("refusal %s does not name network.allowOut", r.body)
		}
		if r := e.do("GET", "/v2/sandboxes?metadata="+url.QueryEscape("app=refused"), e.key, nil).want(t, http.StatusOK); string(bytes.TrimSpace(r.body)) != "[]" {
			t.Errorf("a refused create left %s", r.body)
		}
	})

	t.Run("List", func(t *testing.T) {
		list := func(query string) []string {
			t.Helper()
			var out []listed
			r := e.do("GET", "/sandboxes"+query, e.key, nil).want(t, http.StatusOK)
			if r.header.Get("X-Next-Token") != "" {
				t.Errorf("GET /sandboxes%s: X-Next-Token %q; the legacy list has no pages", query, r.header.Get("X-Next-Token"))
			}
			r.decode(t, &out)
			var got []string
			for _, l := range out {
				if l.State != "running" || l.StartedAt.IsZero() || l.EnvdVersion == "" {
					t.Errorf("GET /sandboxes%s: entry %+v", query, l)
				}
				got = append(got, l.SandboxID)
			}
			slices.Sort(got)
			return got
		}
		tests := []struct {
			query string
			want  []string
		}{
			{"", []string{id}}, // paused ones are not listed
			{"?metadata=" + url.QueryEscape("app=legacy"), []string{id}},
			{"?metadata=" + url.QueryEscape("app=legacy-paused"), nil},
			{"?metadata=" + url.QueryEscape("app=none"), nil},
		}
		for _, tt := range tests {
			if got := list(tt.query); !slices.Equal(got, tt.want) {
				t.Errorf("GET /sandboxes%s = %v, want %v", tt.query, got, tt.want)
			}
		}
		// Nothing is JSON [], not null.
		if r := e.do("GET", "/sandboxes", other, nil).want(t, http.StatusOK); strings.TrimSpace(string(r.body)) != "[]" {
			t.Errorf("other team's list %s, want []", r.body)
		}
	})

	t.Run("Refresh", func(t *testing.T) {
		e.do("POST", "/sandboxes/"+id+"/timeout", e.key, map[string]any{"timeout": 30}).want(t, http.StatusNoContent)
		e.do("POST", "/sandboxes/"+id+"/refreshes", e.key, map[string]any{"duration": 600}).want(t, http.StatusNoContent)
		end := e.get(t, id).EndAt
		if !end.After(time.Now().Add(500 * time.Second)) {
			t.Fatalf("endAt %s after a 600 s refresh", end)
		}
		// A shorter refresh keeps the later end; an empty body is a refresh too.
		e.do("POST", "/sandboxes/"+id+"/refreshes", e.key, map[string]any{"duration": 60}).want(t, http.StatusNoContent)
		e.do("POST", "/sandboxes/"+id+"/refreshes", e.key, nil).want(t, http.StatusNoContent)
		if got := e.get(t, id).EndAt; !got.Equal(end) {
			t.Fatalf("endAt %s after shorter refreshes, want %s kept", got, end)
		}
	})

	t.Run("Connect", func(t *testing.T) {
		var r created
		e.do("POST", "/sandboxes/"+id+"/connect", e.key, map[string]any{"timeout": 900}).want(t, http.StatusOK).decode(t, &r)
		if r.SandboxID != id || r.EnvdAccessToken != c.EnvdAccessToken || r.Domain != "localhost" {
			t.Fatalf("connect response %+v", r)
		}
		if end := e.get(t, id).EndAt; !end.After(time.Now().Add(800 * time.Second)) {
			t.Fatalf("endAt %s after connecting for 900 s", end)
		}
		e.do("POST", "/sandboxes/"+id+"/pause", e.key, nil).want(t, http.StatusNoContent)
		e.do("POST", "/sandboxes/"+id+"/connect", e.key, map[string]any{"timeout": 300}).want(t, http.StatusCreated).decode(t, &r)
		if r.SandboxID != id {
			t.Fatalf("connect response %+v", r)
		}
		if l := e.get(t, id); l.State != "running" {
			t.Fatalf("state %q after connect", l.State)
		}
		e.do("GET", "/proxy/"+id+"/49983/health", "", nil).want(t, http.StatusNoContent)
	})

	t.Run("Resume", func(t *testing.T) {
		var r created
		e.do("POST", "/sandboxes/"+paused+"/resume", e.key, map[string]any{"timeout": 600, "autoPause": false}).
			want(t, http.StatusCreated).decode(t, &r)
		if r.SandboxID != paused || r.EnvdVersion == "" || r.EnvdAccessToken == "" || r.Domain != "localhost" {
			t.Fatalf("resume response %+v", r)
		}
		l := e.get(t, paused)
		if l.State != "running" || !l.EndAt.After(time.Now().Add(500*time.Second)) {
			t.Fatalf("after resume for 600 s: %+v", l)
		}
		e.do("GET", "/proxy/"+paused+"/49983/health", "", nil).want(t, http.StatusNoContent)
		e.do("POST", "/sandboxes/"+paused+"/resume", e.key, nil).want(t, http.StatusConflict)

		// Without a body: E2B's default of 15 s.
		e.do("POST", "/sandboxes/"+paused+"/pause", e.key, nil).want(t, http.StatusNoContent)
		e.do("POST", "/sandboxes/"+paused+"/resume", e.key, nil).want(t, http.StatusCreated)
		if l := e.get(t, paused); l.State != "running" || l.EndAt.After(time.Now().Add(20*time.Second)) {
			t.Fatalf("after resume without a timeout: %+v", l)
		}
	})

	t.Run("Unsupported", func(t *testing.T) {
		tests := []struct {
			method, path string
			feature      string
		}{
			{"PUT", "/sandboxes/" + id + "/network", "network"},
			{"POST", "/templates", "legacy template builds"},
			{"POST", "/v2/templates", "legacy template builds"},
			{"POST", "/templates/base", "legacy template builds"},
			{"POST", "/templates/base/builds/b1", "legacy template builds"},
			{"GET", "/secrets", "secrets"},
			{"GET", "/nodes", "node API"},
		}
		for _, tt := range tests {
			t.Run(tt.method+" "+tt.path, func(t *testing.T) {
				r := e.do(tt.method, tt.path, e.key, map[string]any{}).want(t, http.StatusNotImplemented)
				var body struct {
					Message string `json:"message"`
				}
				r.decode(t, &body)
				if !strings.Contains(body.Message, tt.feature) || !strings.Contains(body.Message, "not supported") {
					t.Errorf("message %q: want it to name %q as not supported", body.Message, tt.feature)
				}
				// The key is checked first, as on every API route.
				e.do(tt.method, tt.path, "", nil).want(t, http.StatusUnauthorized)
			})
		}
		e.do("GET", "/templates/base/other", e.key, nil).want(t, http.StatusNotFound)
	})

	t.Run("Templates", func(t *testing.T) {
		type e2bTemplate struct {
			TemplateID, BuildID, EnvdVersion, BuildStatus string
			CPUCount, MemoryMB, DiskSizeMB                int
			Public                                        bool
			Aliases, Names                                []string
			CreatedAt                                     time.Time
		}
		var list []e2bTemplate
		for _, path := range []string{"/templates", "/v2/templates"} {
			e.do("GET", path, e.key, nil).want(t, http.StatusOK).decode(t, &list)
			i := slices.IndexFunc(list, func(t e2bTemplate) bool { return t.TemplateID == "base" })
			if i < 0 {
				t.Fatalf("GET %s: no base in %+v", path, list)
			}
			b := list[i]
			if len(b.BuildID) != 36 || b.BuildStatus != "ready" || b.EnvdVersion == "" || b.CPUCount < 1 || b.MemoryMB < 128 ||
				b.DiskSizeMB < 1 || !b.Public || !slices.Equal(b.Aliases, []string{"base"}) || b.CreatedAt.IsZero() {
				t.Errorf("GET %s: base is %+v", path, b)
			}
		}
		e.do("GET", "/templates?teamID=team_someoneelse", e.key, nil).want(t, http.StatusForbidden)
		var one struct {
			TemplateID string
			Builds     []struct{ BuildID, Status string }
		}
		e.do("GET", "/templates/base", e.key, nil).want(t, http.StatusOK).decode(t, &one)
		if one.TemplateID != "base" || len(one.Builds) != 1 || one.Builds[0].Status != "ready" || len(one.Builds[0].BuildID) != 36 {
			t.Errorf("GET /templates/base: %+v", one)
		}
		var alias struct {
			TemplateID string
			Public     bool
		}
		e.do("GET", "/templates/aliases/base", e.key, nil).want(t, http.StatusOK).decode(t, &alias)
		if alias.TemplateID != "base" || !alias.Public {
			t.Errorf("alias base: %+v", alias)
		}
		e.do("GET", "/templates/aliases/nosuchtemplate", e.key, nil).want(t, http.StatusNotFound)
		e.do("GET", "/templates/nosuchtemplate", e.key, nil).want(t, http.StatusNotFound)
		e.do("GET", "/templates/aliases/"+strings.Repeat("a", 64), e.key, nil).want(t, http.StatusBadRequest)
		e.do("GET", "/templates", "", nil).want(t, http.StatusUnauthorized)
	})
}
