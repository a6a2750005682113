package controlplane_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/controlplane"
	"roost.dev/roost/errdefs"
	"roost.dev/roost/store/storetest"
)

// created is the create (and connect) response.
type created struct {
	SandboxID          string `json:"sandboxID"`
	TemplateID         string `json:"templateID"`
	ClientID           string `json:"clientID"`
	EnvdVersion        string `json:"envdVersion"`
	EnvdAccessToken    string `json:"envdAccessToken"`
	TrafficAccessToken string `json:"trafficAccessToken"`
	Domain             string `json:"domain"`
}

// listed is a list entry; GET adds domain and envdAccessToken.
type listed struct {
	SandboxID       string            `json:"sandboxID"`
	TemplateID      string            `json:"templateID"`
	ClientID        string            `json:"clientID"`
	StartedAt       time.Time         `json:"startedAt"`
	EndAt           time.Time         `json:"endAt"`
	State           string            `json:"state"`
	CPUCount        int               `json:"cpuCount"`
	MemoryMB        int64             `json:"memoryMB"`
	DiskSizeMB      int64             `json:"diskSizeMB"`
	EnvdVersion     string            `json:"envdVersion"`
	Metadata        map[string]string `json:"metadata"`
	Domain          string            `json:"domain"`
	EnvdAccessToken string            `json:"envdAccessToken"`
}

func (e *testenv) create(t *testing.T, body map[string]any) created {
	t.Helper()
	var c created
	e.do("POST", "/v2/sandboxes", e.key, body).want(t, http.StatusCreated).decode(t, &c)
	return c
}

func (e *testenv) get(t *testing.T, id string) listed {
	t.Helper()
	var l listed
	e.do("GET", "/sandboxes/"+id, e.key, nil).want(t, http.StatusOK).decode(t, &l)
	return l
}

func TestAPI(t *testing.T) {
	storetest.Run(t, func(t *testing.T, dbURL string) {
		testAPI(t, newTestenvDB(t, controlplane.Config{}, dbURL))
	})
}

func testAPI(t *testing.T, e *testenv) {
	other, err := e.cp.CreateTeamWithKey(t.Context(), "other")
	if err != nil {
		t.Fatal(err)
	}

	t.Run("Health", func(t *testing.T) {
		e.do("GET", "/health", "", nil).want(t, http.StatusOK)
	})

	t.Run("Auth", func(t *testing.T) {
		e.do("GET", "/v2/sandboxes", "", nil).want(t, http.StatusUnauthorized)
		e.do("GET", "/v2/sandboxes", "roost_notakey", nil).want(t, http.StatusUnauthorized)
		e.do("POST", "/v2/sandboxes", "", map[string]any{}).want(t, http.StatusUnauthorized)
		e.do("GET", "/sandboxes/abc", "bad", nil).want(t, http.StatusUnauthorized)
		e.do("GET", "/v2/nothing", e.key, nil).want(t, http.StatusNotFound)
	})

	t.Run("CreateErrors", func(t *testing.T) {
		e.do("POST", "/v2/sandboxes", e.key, map[string]any{"templateID": "nosuchtemplate"}).want(t, http.StatusNotFound)
		e.do("POST", "/v2/sandboxes", e.key, map[string]any{"cpuCount": 100000}).want(t, http.StatusBadRequest)
		// Plausible to the control plane (within the team's default
		// quota of 200 vCPUs), more than the host has: the agent refuses
		// (invalid_argument).
		e.do("POST", "/v2/sandboxes", e.key, map[string]any{"cpuCount": 150}).want(t, http.StatusBadRequest)
		e.do("POST", "/v2/sandboxes", e.key, map[string]any{"timeout": -1}).want(t, http.StatusBadRequest)
		// Refused creates leave no record behind.
		var all []listed
		e.do("GET", "/v2/sandboxes", e.key, nil).want(t, http.StatusOK).decode(t, &all)
		if len(all) != 0 {
			t.Fatalf("failed creates left %d sandboxes: %+v", len(all), all)
		}
	})

	t.Run("Lifecycle", func(t *testing.T) {
		c := e.create(t, map[string]any{"templateID": "base", "timeout": 120,
			"metadata": map[string]string{"app": "lifecycle"}, "envVars": map[string]string{"GREETING": "hello"}})
		if len(c.SandboxID) < 13 || c.TemplateID != "base" || c.ClientID != "host1" || c.EnvdVersion == "" ||
			c.EnvdAccessToken == "" || c.TrafficAccessToken == "" || c.Domain != "localhost" {
			t.Fatalf("create response %+v", c)
		}
		id := c.SandboxID
		l := e.get(t, id)
		if l.State != "running" || l.EnvdAccessToken != c.EnvdAccessToken || l.Domain != "localhost" ||
			l.Metadata["app"] != "lifecycle" || l.CPUCount < 1 || l.MemoryMB < 64 || l.DiskSizeMB < 1 ||
			l.StartedAt.IsZero() || !l.EndAt.After(time.Now().Add(time.Minute)) {
			t.Fatalf("get %+v", l)
		}

		// Another team sees nothing.
		e.do("GET", "/sandboxes/"+id, other, nil).want(t, http.StatusNotFound)
		e.do("DELETE", "/sandboxes/"+id, other, nil).want(t, http.StatusNotFound)
		e.do("POST", "/sandboxes/"+id+"/pause", other, nil).want(t, http.StatusNotFound)
		var none []listed
		e.do("GET", "/v2/sandboxes", other, nil).want(t, http.StatusOK).decode(t, &none)
		if len(none) != 0 {
			t.Fatalf("other team lists %+v", none)
		}

		// envd through the proxy: path form and header form.
		e.do("GET", "/proxy/"+id+"/49983/health", "", nil).want(t, http.StatusNoContent)
		e.do("GET", "/health", "", nil, "E2b-Sandbox-Id", id, "E2b-Sandbox-Port", "49983").want(t, http.StatusNoContent)
		// Without the envd access token envd refuses anything but /health.
		e.do("GET", "/proxy/"+id+"/49983/envs", "", nil).want(t, http.StatusUnauthorized)
		var envs map[string]string
		e.do("GET", "/envs", "", nil, "E2b-Sandbox-Id", id, "E2b-Sandbox-Port", "49983",
			"X-Access-Token", c.EnvdAccessToken).want(t, http.StatusOK).decode(t, &envs)
		if envs["GREETING"] != "hello" {
			t.Fatalf("envd envs %v: want GREETING=hello", envs)
		}

		// Metrics: the host's history of the sandbox. Right after the
		// create it has a point (a sandbox with none is sampled at once).
		var ms []struct {
			Timestamp     time.Time `json:"timestamp"`
			TimestampUnix int64     `json:"timestampUnix"`
			CPUCount      int       `json:"cpuCount"`
			CPUUsedPct    float64   `json:"cpuUsedPct"`
			MemUsed       uint64    `json:"memUsed"`
			MemTotal      uint64    `json:"memTotal"`
			DiskUsed      uint64    `json:"diskUsed"`
			DiskTotal     uint64    `json:"diskTotal"`
		}
		e.do("GET", "/sandboxes/"+id+"/metrics", e.key, nil).want(t, http.StatusOK).decode(t, &ms)
		if len(ms) < 1 || ms[0].TimestampUnix == 0 || ms[0].Timestamp.Unix() != ms[0].TimestampUnix ||
			ms[0].CPUCount < 1 || ms[0].MemTotal != uint64(l.MemoryMB)<<20 || ms[0].MemUsed == 0 || ms[0].DiskTotal == 0 {
			t.Fatalf("metrics %+v", ms)
		}
		e.do("GET", "/sandboxes/"+id+"/metrics", other, nil).want(t, http.StatusNotFound)
		// An interval that holds now has points; one in the past has none;
		// one longer than the history is refused.
		hourAgo := time.Now().Add(-time.Hour).Unix()
		e.do("GET", fmt.Sprintf("/sandboxes/%s/metrics?start=%d", id, hourAgo), e.key, nil).want(t, http.StatusOK).decode(t, &ms)
		if len(ms) < 1 {
			t.Fatalf("metrics since an hour ago: %+v", ms)
		}
		e.do("GET", fmt.Sprintf("/sandboxes/%s/metrics?start=%d&end=%d", id, hourAgo, hourAgo+1800), e.key, nil).want(t, http.StatusOK).decode(t, &ms)
		if len(ms) != 0 {
			t.Fatalf("metrics of an interval in the past: %+v", ms)
		}
		e.do("GET", "/sandboxes/"+id+"/metrics?end=soon", e.key, nil).want(t, http.StatusBadRequest)
		e.do("GET", "/sandboxes/"+id+"/metrics?start=0", e.key, nil).want(t, http.StatusBadRequest).wantMessage(t, "longer than the 24h0m0s of metrics roost keeps")
		// Many at once: the team's running sandboxes, others left out.
		var many struct {
			Sandboxes map[string]struct {
				CPUCount int    `json:"cpuCount"`
				MemTotal uint64 `json:"memTotal"`
			} `json:"sandboxes"`
		}
		e.do("GET", "/sandboxes/metrics?sandbox_ids="+id+",inosuchsandbox0", e.key, nil).want(t, http.StatusOK).decode(t, &many)
		if m, ok := many.Sandboxes[id]; len(many.Sandboxes) != 1 || !ok || m.CPUCount < 1 || m.MemTotal == 0 {
			t.Fatalf("metrics of %s and an unknown sandbox: %+v", id, many)
		}
		many.Sandboxes = nil // decoding into a map adds to it
		e.do("GET", "/sandboxes/metrics?sandbox_ids="+id, other, nil).want(t, http.StatusOK).decode(t, &many)
		if len(many.Sandboxes) != 0 {
			t.Fatalf("another team sees metrics %+v", many)
		}
		for _, q := range []string{"", "?sandbox_ids=", "?sandbox_ids=" + id + "," + id, "?sandbox_ids=a,,b",
			"?sandbox_ids=" + strings.TrimSuffix(strings.Repeat("x,", 101), ",")} {
			e.do("GET", "/sandboxes/metrics"+q, e.key, nil).want(t, http.StatusBadRequest)
		}

		// Timeout moves the end.
		e.do("POST", "/sandboxes/"+id+"/timeout", e.key, map[string]any{"timeout": 600}).want(t, http.StatusNoContent)
		if l := e.get(t, id); !l.EndAt.After(time.Now().Add(500 * time.Second)) {
			t.Fatalf("endAt %s after a 600 s timeout", l.EndAt)
		}
		e.do("POST", "/sandboxes/"+id+"/timeout", e.key, map[string]any{}).want(t, http.StatusBadRequest)
		e.do("POST", "/sandboxes/"+id+"/timeout", e.key, map[string]any{"timeout": -1}).want(t, http.StatusBadRequest)

		// Pause, twice; a paused sandbox does not run: its ports answer
		// 502, which E2B's SDKs read as "not running" (proxy/doc.go).
		e.do("POST", "/sandboxes/"+id+"/pause", e.key, nil).want(t, http.StatusNoContent)
		e.do("POST", "/sandboxes/"+id+"/pause", e.key, nil).want(t, http.StatusConflict)
		if l := e.get(t, id); l.State != "paused" {
			t.Fatalf("state %q after pause", l.State)
		}
		// A paused sandbox has no timeout to set: 404, as E2B answers (the
		// JS SDK before 2.6 resumes on it).
		e.do("POST", "/sandboxes/"+id+"/timeout", e.key, map[string]any{"timeout": 60}).want(t, http.StatusNotFound)
		e.do("GET", "/proxy/"+id+"/49983/health", "", nil).want(t, http.StatusBadGateway).wantMessage(t, "sandbox "+id+" is paused")
		// A paused sandbox keeps its history; it is not among the running
		// ones.
		e.do("GET", "/sandboxes/"+id+"/metrics", e.key, nil).want(t, http.StatusOK).decode(t, &ms)
		if len(ms) < 1 {
			t.Fatalf("metrics of a paused sandbox %+v", ms)
		}
		many.Sandboxes = nil
		e.do("GET", "/sandboxes/metrics?sandbox_ids="+id, e.key, nil).want(t, http.StatusOK).decode(t, &many)
		if len(many.Sandboxes) != 0 {
			t.Fatalf("latest metrics of a paused sandbox %+v", many)
		}

		// Connect resumes (201), then only extends (200).
		var r created
		e.do("POST", "/v2/sandboxes/"+id+"/connect", e.key, map[string]any{"timeout": 300}).want(t, http.StatusCreated).decode(t, &r)
		if r.SandboxID != id || r.EnvdAccessToken != c.EnvdAccessToken {
			t.Fatalf("connect response %+v", r)
		}
		if l := e.get(t, id); l.State != "running" {
			t.Fatalf("state %q after connect", l.State)
		}
		e.do("GET", "/proxy/"+id+"/49983/health", "", nil).want(t, http.StatusNoContent)
		e.do("POST", "/v2/sandboxes/"+id+"/connect", e.key, map[string]any{"timeout": 300}).want(t, http.StatusOK).decode(t, &r)
		if r.SandboxID != id {
			t.Fatalf("connect response %+v", r)
		}

		// Delete; then it is gone everywhere.
		e.do("DELETE", "/sandboxes/"+id, e.key, nil).want(t, http.StatusNoContent)
		e.do("DELETE", "/sandboxes/"+id, e.key, nil).want(t, http.StatusNotFound)
		e.do("GET", "/sandboxes/"+id, e.key, nil).want(t, http.StatusNotFound)
		e.do("GET", "/proxy/"+id+"/49983/health", "", nil).want(t, http.StatusBadGateway).wantMessage(t, "sandbox "+id+" was not found")
		if _, err := e.agent.Get(id); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("agent still has %s: %v", id, err)
		}
		// But its host keeps its metrics for a while, for its team.
		e.do("GET", "/sandboxes/"+id+"/metrics", e.key, nil).want(t, http.StatusOK).decode(t, &ms)
		if len(ms) < 1 {
			t.Fatalf("metrics of a killed sandbox %+v", ms)
		}
		e.do("GET", "/sandboxes/"+id+"/metrics", other, nil).want(t, http.StatusNotFound)
	})

	t.Run("List", func(t *testing.T) {
		var ids []string
		for i, app := range []string{"web", "web", "db"} {
			c := e.create(t, map[string]any{"metadata": map[string]string{"app": app, "n": string(rune('0' + i))}})
			ids = append(ids, c.SandboxID)
		}
		t.Cleanup(func() {
			for _, id := range ids {
				e.do("DELETE", "/sandboxes/"+id, e.key, nil)
			}
		})
		e.do("POST", "/sandboxes/"+ids[2]+"/pause", e.key, nil).want(t, http.StatusNoContent)

		list := func(query string) ([]string, string) {
			t.Helper()
			var out []listed
			r := e.do("GET", "/v2/sandboxes?"+query, e.key, nil).want(t, http.StatusOK)
			r.decode(t, &out)
			var got []string
			for _, l := range out {
				got = append(got, l.SandboxID)
			}
			slices.Sort(got)
			return got, r.header.Get("X-Next-Token")
		}
		sorted := func(s ...string) []string { return slices.Sorted(slices.Values(s)) }
		tests := []struct {
			query string
			want  []string
		}{
			{"", sorted(ids...)},
			{"state=running", sorted(ids[0], ids[1])},
			{"state=paused", sorted(ids[2])},
			{"state=running,paused", sorted(ids...)},
			{"metadata=" + url.QueryEscape("app=web"), sorted(ids[0], ids[1])},
			{"metadata=" + url.QueryEscape("app=web&n=1"), sorted(ids[1])},
			{"state=paused&metadata=" + url.QueryEscape("app=web"), nil},
		}
		for _, tt := range tests {
			if got, _ := list(tt.query); !slices.Equal(got, tt.want) {
				t.Errorf("list ?%s = %v, want %v", tt.query, got, tt.want)
			}
		}
		e.do("GET", "/v2/sandboxes?state=bogus", e.key, nil).want(t, http.StatusBadRequest)
		e.do("GET", "/v2/sandboxes?nextToken=garbage", e.key, nil).want(t, http.StatusBadRequest)

		// Pages of two: every sandbox exactly once, the token in X-Next-Token.
		var all []string
		query := "limit=2"
		for pages := 0; ; pages++ {
			if pages > 3 {
				t.Fatal("pagination does not end")
			}
			got, next := list(query)
			all = append(all, got...)
			if next == "" {
				break
			}
			query = "limit=2&nextToken=" + url.QueryEscape(next)
		}
		if slices.Sort(all); !slices.Equal(all, sorted(ids...)) {
			t.Fatalf("pages gave %v, want %v", all, sorted(ids...))
		}
	})

	t.Run("ListOrderFiltersPaging", func(t *testing.T) {
		var ids []string
		for range 3 {
			ids = append(ids, e.create(t, map[string]any{"metadata": map[string]string{"case": "order"}}).SandboxID)
		}
		t.Cleanup(func() {
			for _, id := range ids {
				e.do("DELETE", "/sandboxes/"+id, e.key, nil)
			}
		})
		e.do("POST", "/sandboxes/"+ids[1]+"/pause", e.key, nil).want(t, http.StatusNoContent)
		md := "metadata=" + url.QueryEscape("case=order")
		list := func(query string) ([]string, string) {
			t.Helper()
			var out []listed
			r := e.do("GET", "/v2/sandboxes?"+md+"&"+query, e.key, nil).want(t, http.StatusOK)
			r.decode(t, &out)
			var got []string
			for _, l := range out {
				got = append(got, l.SandboxID)
			}
			return got, r.header.Get("X-Next-Token")
		}
		second := e.get(t, ids[1])
		tests := []struct {
			query string
			want  []string
		}{
			{"", []string{ids[2], ids[1], ids[0]}},
			{"order=desc", []string{ids[2], ids[1], ids[0]}},
			{"order=asc", []string{ids[0], ids[1], ids[2]}},
			{"order=asc&state=running", []string{ids[0], ids[2]}},
			{"startedAfter=" + url.QueryEscape(second.StartedAt.Format(time.RFC3339Nano)), []string{ids[2], ids[1]}},
			{"startedAfter=" + url.QueryEscape(e.get(t, ids[2]).StartedAt.Add(time.Second).Format(time.RFC3339Nano)), nil},
			{"template=" + second.TemplateID, []string{ids[2], ids[1], ids[0]}},
			{"template=unknown-template", nil},
		}
		for _, tt := range tests {
			if got, _ := list(tt.query); !slices.Equal(got, tt.want) {
				t.Errorf("list ?%s = %v, want %v", tt.query, got, tt.want)
			}
		}
		// X-Total-Running counts the running sandboxes of every page, and
		// only when running ones are asked for.
		for query, want := range map[string]string{"limit=1": "2", "state=running&limit=1": "2", "state=paused": "",
			"template=unknown-template": "0", "startedAfter=" + url.QueryEscape(second.StartedAt.Format(time.RFC3339Nano)): "1"} {
			r := e.do("GET", "/v2/sandboxes?"+md+"&"+query, e.key, nil).want(t, http.StatusOK)
			if got := r.header.Get("X-Total-Running"); got != want {
				t.Errorf("list ?%s: X-Total-Running %q, want %q", query, got, want)
			}
		}
		for _, bad := range []string{"order=newest", "startedAfter=yesterday", "limit=101", "limit=0"} {
			e.do("GET", "/v2/sandboxes?"+bad, e.key, nil).want(t, http.StatusBadRequest)
		}

		// Pages of one, newest first, while the sandboxes change state:
		// the page just read is paused and the next resumed, and still
		// each comes once, in order.
		got, next := list("limit=1")
		if !slices.Equal(got, ids[2:3]) || next == "" {
			t.Fatalf("first page = %v, token %q; want [%s] and a token", got, next, ids[2])
		}
		e.do("POST", "/sandboxes/"+ids[2]+"/pause", e.key, nil).want(t, http.StatusNoContent)
		e.do("POST", "/v2/sandboxes/"+ids[1]+"/connect", e.key, map[string]any{"timeout": 60}).want(t, http.StatusCreated)
		e.do("GET", "/v2/sandboxes?"+md+"&order=asc&limit=1&nextToken="+url.QueryEscape(next), e.key, nil).want(t, http.StatusBadRequest)
		all := got
		for pages := 1; next != ""; pages++ {
			if pages > 3 {
				t.Fatal("pagination does not end")
			}
			got, next = list("limit=1&nextToken=" + url.QueryEscape(next))
			all = append(all, got...)
		}
		if want := []string{ids[2], ids[1], ids[0]}; !slices.Equal(all, want) {
			t.Fatalf("pages gave %v, want %v", all, want)
		}
	})

	t.Run("TimeoutPauses", func(t *testing.T) {
		c := e.create(t, map[string]any{"timeout": 2, "autoPause": true})
		t.Cleanup(func() { e.do("DELETE", "/sandboxes/"+c.SandboxID, e.key, nil) })
		e.waitState(t, c.SandboxID, "paused")
		e.do("POST", "/v2/sandboxes/"+c.SandboxID+"/connect", e.key, map[string]any{"timeout": 60}).want(t, http.StatusCreated)
		// A timeout of 0 runs the timeout action now (E2B's SDKs force it so).
		e.do("POST", "/sandboxes/"+c.SandboxID+"/timeout", e.key, map[string]any{"timeout": 0}).want(t, http.StatusNoContent)
		e.waitState(t, c.SandboxID, "paused")
	})

	t.Run("TimeoutKills", func(t *testing.T) {
		c := e.create(t, map[string]any{"timeout": 2})
		deadline := time.Now().Add(30 * time.Second)
		for {
			r := e.do("GET", "/sandboxes/"+c.SandboxID, e.key, nil)
			if r.status == http.StatusNotFound {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("sandbox still there 30 s after a 2 s timeout: %d %s", r.status, r.body)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if _, err := e.agent.Get(c.SandboxID); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("agent still has %s: %v", c.SandboxID, err)
		}
		// Its envd does not run: 502, E2B's "not running", in every form.
		for _, r := range []response{
			e.do("GET", "/proxy/"+c.SandboxID+"/49983/health", "", nil),
			e.via(t, nil, "/health", "49983-"+c.SandboxID+".localhost"),
			e.via(t, nil, "/health", "", "E2b-Sandbox-Id", c.SandboxID, "E2b-Sandbox-Port", "49983"),
		} {
			r.want(t, http.StatusBadGateway).wantMessage(t, "sandbox "+c.SandboxID+" was not found")
		}
	})
}

func TestCreateTeamWithKey(t *testing.T) {
	storetest.Run(t, func(t *testing.T, dbURL string) {
		testCreateTeamWithKey(t, newTestenvDB(t, controlplane.Config{}, dbURL))
	})
}

func testCreateTeamWithKey(t *testing.T, e *testenv) {
	k2, err := e.cp.CreateTeamWithKey(t.Context(), "second")
	if err != nil || k2 == e.key {
		t.Fatalf("second key %q, %v", k2, err)
	}
	var out []json.RawMessage
	e.do("GET", "/v2/sandboxes", k2, nil).want(t, http.StatusOK).decode(t, &out)
	if len(out) != 0 {
		t.Fatalf("new team lists %d sandboxes", len(out))
	}
}

// waitState polls GET until the sandbox shows state.
func (e *testenv) waitState(t *testing.T, id, state string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		l := e.get(t, id)
		if l.State == state {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox %s is %q after 30 s, want %q", id, l.State, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestReconcile(t *testing.T) {
	storetest.Run(t, func(t *testing.T, dbURL string) {
		testReconcile(t, newTestenvDB(t, controlplane.Config{ReconcileInterval: 100 * time.Millisecond}, dbURL))
	})
}

func testReconcile(t *testing.T, e *testenv) {
	gone := e.create(t, nil).SandboxID
	kept := e.create(t, nil).SandboxID
	paused := e.create(t, map[string]any{"timeout": 60}).SandboxID
	e.do("POST", "/sandboxes/"+paused+"/pause", e.key, nil).want(t, http.StatusNoContent)

	// The agent loses a sandbox behind the control plane's back.
	if err := e.agent.Destroy(t.Context(), gone); err != nil {
		t.Fatal(err)
	}
	e.waitState(t, gone, "lost")
	var out []listed
	e.do("GET", "/v2/sandboxes", e.key, nil).want(t, http.StatusOK).decode(t, &out)
	for _, l := range out {
		if l.SandboxID == gone {
			t.Fatalf("a lost sandbox is listed: %+v", l)
		}
	}
	if len(out) != 2 {
		t.Fatalf("list shows %d sandboxes, want the 2 the agent has", len(out))
	}
	e.do("GET", "/proxy/"+gone+"/49983/health", "", nil).want(t, http.StatusBadGateway)
	e.do("POST", "/sandboxes/"+gone+"/pause", e.key, nil).want(t, http.StatusConflict)
	e.do("DELETE", "/sandboxes/"+gone, e.key, nil).want(t, http.StatusNoContent)
	e.do("GET", "/sandboxes/"+gone, e.key, nil).want(t, http.StatusNotFound)
	if l := e.get(t, kept); l.State != "running" {
		t.Fatalf("a sandbox the agent has is %q", l.State)
	}

	// The agent stops answering: after three rounds the host is down and
	// its sandboxes, running or paused, are lost.
	e.agentSrv.Close()
	e.waitState(t, kept, "lost")
	e.waitState(t, paused, "lost")
	e.do("POST", "/v2/sandboxes", e.key, map[string]any{}).want(t, http.StatusServiceUnavailable)
	e.do("GET", "/proxy/"+kept+"/49983/health", "", nil).want(t, http.StatusBadGateway)
}

func TestHosts(t *testing.T) {
	storetest.Run(t, func(t *testing.T, dbURL string) {
		testHosts(t, newTestenvDB(t, controlplane.Config{}, dbURL))
	})
}

func testHosts(t *testing.T, e *testenv) {
	tok, err := e.cp.CreateRegistrationToken(t.Context(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// A second host, served by the same agent (its sandbox IDs are unique,
	// so two hosts can share it) over mutual TLS: room for one sandbox.
	a := e.newTLSAgent(t)
	reg := map[string]any{"registrationToken": tok, "name": "second", "url": a.url, "csr": string(a.csr),
		"runtime": "namespace", "cpus": 2, "memoryMB": 1024, "maxSandboxes": 1}
	var got registration
	e.do("POST", "/v1/hosts/register", "", reg).want(t, http.StatusCreated).decode(t, &got)
	if got.HostID == "" || got.HostID == "host1" || got.Token == "" {
		t.Fatalf("registered host id %q, token %q", got.HostID, got.Token)
	}
	a.start(t, tok, got)
	e.do("POST", "/v1/hosts/register", "", reg).want(t, http.StatusUnauthorized) // used once
	reg["registrationToken"] = "roostreg_wrong"
	e.do("POST", "/v1/hosts/register", "", reg).want(t, http.StatusUnauthorized)
	reg["url"] = "not a url"
	e.do("POST", "/v1/hosts/register", "", reg).want(t, http.StatusBadRequest)
	reg["url"] = e.agentSrv.URL // plain HTTP: the link is mutual TLS
	e.do("POST", "/v1/hosts/register", "", reg).want(t, http.StatusBadRequest)

	// Heartbeats need the host's own token; the store keeps only its hash.
	hb := "/v1/hosts/" + got.HostID + "/heartbeat"
	usage := map[string]any{"sandboxes": 1, "vcpus": 2, "memoryMB": 512}
	e.do("POST", hb, "", usage).want(t, http.StatusUnauthorized)
	e.do("POST", hb, "", usage, "Authorization", "Bearer wrong").want(t, http.StatusUnauthorized)
	e.do("POST", "/v1/hosts/nosuchhost/heartbeat", "", usage, "Authorization", "Bearer "+got.Token).want(t, http.StatusUnauthorized)
	e.do("POST", hb, "", usage, "Authorization", "Bearer "+got.Token).want(t, http.StatusNoContent)
	h, err := e.store.GetHost(t.Context(), got.HostID)
	if err != nil || h.LastHeartbeat.IsZero() || h.Usage.Sandboxes != 1 || h.State != "ready" {
		t.Fatalf("host after heartbeat %+v, %v", h, err)
	}

	// The scheduler spreads: fewest sandboxes first (ties: most memory),
	// and never past a host's maxSandboxes.
	var clients []string
	for range 3 {
		c := e.create(t, map[string]any{})
		clients = append(clients, c.ClientID)
		t.Cleanup(func() { e.do("DELETE", "/sandboxes/"+c.SandboxID, e.key, nil) })
	}
	if want := []string{"host1", got.HostID, "host1"}; !slices.Equal(clients, want) {
		t.Fatalf("sandboxes placed on %v, want %v", clients, want)
	}
}
