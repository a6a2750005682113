package controlplane_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/controlplane"
	"roost.dev/roost/store/storetest"
)

// teamCreated is POST /v1/teams's answer.
type teamCreated struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	APIKey struct {
		ID  string `json:"id"`
		Key string `json:"key"`
	} `json:"apiKey"`
	Quota struct {
		Limits map[string]int64 `json:"limits"`
		Own    map[string]int64 `json:"own"`
	} `json:"quota"`
}

type lifecycleEvent struct {
	ID        string `json:"id"`
	Type      string `json:"type"`
	SandboxID string `json:"sandboxId"`
	TeamID    string `json:"sandboxTeamId"`
	EventData struct {
		Reason   string            `json:"reason"`
		Metadata map[string]string `json:"sandbox_metadata"`
	} `json:"eventData"`
	Timestamp time.Time `json:"timestamp"`
}

type auditPage struct {
	Entries []struct {
		TeamID string `json:"teamID"`
		Actor  string `json:"actor"`
		Action string `json:"action"`
		Target string `json:"target"`
		Source string `json:"source"`
		Status int    `json:"status"`
		Error  string `json:"error"`
	} `json:"entries"`
}

// admin sends a request with the operator's token (and X-Team-ID when
// team is not "").
func (e *testenv) admin(tok, method, path, team string, body any) response {
	e.t.Helper()
	hdr := []string{"X-Admin-Token", tok}
	if team != "" {
		hdr = append(hdr, "X-Team-ID", team)
	}
	return e.do(method, path, "", body, hdr...)
}

func (e *testenv) adminToken(t *testing.T) string {
	t.Helper()
	tok, err := e.cp.CreateAdminToken(context.Background(), "test operator")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (e *testenv) newTeam(t *testing.T, adm, name string, quota map[string]int64) teamCreated {
	t.Helper()
	var tc teamCreated
	e.admin(adm, "POST", "/v1/teams", "", map[string]any{"name": name, "quota": quota}).want(t, http.StatusCreated).decode(t, &tc)
	if tc.ID == "" || !strings.HasPrefix(tc.APIKey.Key, "e2b_") {
		t.Fatalf("team created without an ID or key: %+v", tc)
	}
	return tc
}

// events lists a team's events (key), oldest first, until one of each
// of want has come (they are stored off the request's path).
func (e *testenv) events(t *testing.T, key, path string, want ...string) []lifecycleEvent {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var evs []lifecycleEvent
		e.do("GET", path+"?orderAsc=true&limit=100", key, nil).want(t, http.StatusOK).decode(t, &evs)
		var got []string
		for _, ev := range evs {
			got = append(got, ev.Type)
		}
		if containsInOrder(got, want) || time.Now().After(deadline) {
			if !containsInOrder(got, want) {
				t.Fatalf("events of %s: %v, want %v in order", path, got, want)
			}
			return evs
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// containsInOrder says whether want is a subsequence of got.
func containsInOrder(got, want []string) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}

// TestTenants: two teams made by the operator, each seeing only its own
// sandboxes, events and audit entries; a quota that runs out answers 429
// naming the limit; the operator sees and acts on all; unknown teams and
// other teams' IDs are refused.
func TestTenants(t *testing.T) {
	storetest.Run(t, func(t *testing.T, dbURL string) {
		e := newTestenvDB(t, controlplane.Config{}, dbURL)
		adm := e.adminToken(t)

		// The operator's routes want the operator's token.
		e.do("GET", "/v1/teams", e.key, nil).want(t, http.StatusUnauthorized)
		e.admin("roost_admin_"+strings.Repeat("0", 40), "GET", "/v1/teams", "", nil).want(t, http.StatusUnauthorized)
		e.admin(e.key, "GET", "/v1/teams", "", nil).want(t, http.StatusUnauthorized)
		e.admin(adm, "POST", "/v1/teams", "", map[string]any{"name": ""}).want(t, http.StatusBadRequest)
		e.admin(adm, "POST", "/v1/teams", "", map[string]any{"name": "x", "quota": map[string]int64{"bogus": 1}}).want(t, http.StatusBadRequest)
		e.admin(adm, "GET", "/v1/teams/team_nosuch", "", nil).want(t, http.StatusNotFound)
		e.admin(adm, "GET", "/v2/sandboxes", "team_nosuch", nil).want(t, http.StatusNotFound)
		e.admin(adm, "GET", "/v2/sandboxes", "", nil).want(t, http.StatusBadRequest)

		a := e.newTeam(t, adm, "alpha", map[string]int64{"sandboxes": 1})
		b := e.newTeam(t, adm, "beta", nil)
		if a.Quota.Own["sandboxes"] != 1 || a.Quota.Limits["sandboxes"] != 1 {
			t.Fatalf("alpha's quota: %+v", a.Quota)
		}
		var teams []teamCreated
		e.admin(adm, "GET", "/v1/teams", "", nil).want(t, http.StatusOK).decode(t, &teams)
		if len(teams) != 3 {
			t.Fatalf("teams: %+v, want test, alpha and beta", teams)
		}

		// Each team creates; alpha's quota runs out at one.
		var sa, sb created
		e.do("POST", "/v2/sandboxes", a.APIKey.Key, map[string]any{"templateID": "base", "metadata": map[string]string{"who": "alpha"}}).
			want(t, http.StatusCreated).decode(t, &sa)
		r := e.do("POST", "/v2/sandboxes", a.APIKey.Key, map[string]any{"templateID": "base"}).want(t, http.StatusTooManyRequests)
		if !strings.Contains(string(r.body), "sandboxes") {
			t.Fatalf("quota refusal names no limit: %s", r.body)
		}
		e.do("POST", "/v2/sandboxes", b.APIKey.Key, map[string]any{"templateID": "base"}).want(t, http.StatusCreated).decode(t, &sb)

		// Each sees its own only.
		e.do("GET", "/sandboxes/"+sa.SandboxID, b.APIKey.Key, nil).want(t, http.StatusNotFound)
		e.do("DELETE", "/sandboxes/"+sa.SandboxID, b.APIKey.Key, nil).want(t, http.StatusNotFound)
		var listedB []listed
		e.do("GET", "/v2/sandboxes", b.APIKey.Key, nil).want(t, http.StatusOK).decode(t, &listedB)
		if len(listedB) != 1 || listedB[0].SandboxID != sb.SandboxID {
			t.Fatalf("beta lists %+v", listedB)
		}
		evA := e.events(t, a.APIKey.Key, "/events/sandboxes", "sandbox.lifecycle.created")
		for _, ev := range evA {
			if ev.TeamID != a.ID || ev.SandboxID != sa.SandboxID {
				t.Fatalf("alpha sees another's event: %+v", ev)
			}
		}
		if evA[0].EventData.Metadata["who"] != "alpha" || evA[0].EventData.Reason != "api" {
			t.Fatalf("created event's data: %+v", evA[0].EventData)
		}
		var none []lifecycleEvent
		e.do("GET", "/events/sandboxes/"+sa.SandboxID, b.APIKey.Key, nil).want(t, http.StatusOK).decode(t, &none)
		if len(none) != 0 {
			t.Fatalf("beta reads alpha's sandbox's events: %+v", none)
		}
		e.do("GET", "/events/sandboxes?types=sandbox.lifecycle.nope", a.APIKey.Key, nil).want(t, http.StatusBadRequest)
		e.do("GET", "/events/sandboxes?limit=101", a.APIKey.Key, nil).want(t, http.StatusBadRequest)

		// The operator acts as a team, and sees every team.
		var listedA []listed
		e.admin(adm, "GET", "/v2/sandboxes", a.ID, nil).want(t, http.StatusOK).decode(t, &listedA)
		if len(listedA) != 1 || listedA[0].SandboxID != sa.SandboxID {
			t.Fatalf("the operator as alpha lists %+v", listedA)
		}
		var counts map[string]int
		e.admin(adm, "GET", "/admin/sandboxes/running-counts", "", nil).want(t, http.StatusOK).decode(t, &counts)
		if counts[a.ID] != 1 || counts[b.ID] != 1 {
			t.Fatalf("running counts: %v", counts)
		}

		// Quotas, set and shown by the operator.
		var q struct {
			Limits map[string]int64 `json:"limits"`
			Usage  map[string]int64 `json:"usage"`
		}
		e.admin(adm, "PATCH", "/v1/teams/"+a.ID+"/quota", "", map[string]any{"sandboxes": 2}).want(t, http.StatusOK).decode(t, &q)
		if q.Limits["sandboxes"] != 2 || q.Usage["sandboxes"] != 1 {
			t.Fatalf("alpha's quota after the change: %+v", q)
		}
		e.admin(adm, "PATCH", "/v1/teams/"+a.ID+"/quota", "", map[string]any{"sandboxes": -1}).want(t, http.StatusBadRequest)
		e.do("POST", "/v2/sandboxes", a.APIKey.Key, map[string]any{"templateID": "base"}).want(t, http.StatusCreated)

		// Keys made and revoked by the operator.
		var k struct {
			ID  string `json:"id"`
			Key string `json:"key"`
		}
		e.admin(adm, "POST", "/admin/teams/"+a.ID+"/api-keys", "", map[string]any{"name": "ci"}).want(t, http.StatusCreated).decode(t, &k)
		e.do("GET", "/v2/sandboxes", k.Key, nil).want(t, http.StatusOK)
		e.admin(adm, "DELETE", "/admin/teams/"+a.ID+"/api-keys/"+k.ID, "", nil).want(t, http.StatusNoContent)
		e.do("GET", "/v2/sandboxes", k.Key, nil).want(t, http.StatusUnauthorized)
		e.admin(adm, "POST", "/admin/teams/team_nosuch/api-keys", "", map[string]any{"name": "x"}).want(t, http.StatusNotFound)

		// The operator kills a team's sandboxes: each has its killed event.
		var killed struct {
			KilledCount int `json:"killedCount"`
			FailedCount int `json:"failedCount"`
		}
		e.admin(adm, "POST", "/admin/teams/"+a.ID+"/sandboxes/kill", "", nil).want(t, http.StatusOK).decode(t, &killed)
		if killed.KilledCount != 2 || killed.FailedCount != 0 {
			t.Fatalf("kill alpha's sandboxes: %+v", killed)
		}
		evs := e.events(t, a.APIKey.Key, "/events/sandboxes/"+sa.SandboxID, "sandbox.lifecycle.created", "sandbox.lifecycle.killed")
		if last := evs[len(evs)-1]; last.EventData.Reason != "admin" {
			t.Fatalf("killed event's reason: %+v", last.EventData)
		}
		e.events(t, a.APIKey.Key, "/events/sandboxes", "sandbox.lifecycle.created", "sandbox.lifecycle.created",
			"sandbox.lifecycle.killed", "sandbox.lifecycle.killed")

		// Team metrics: alpha had two running at most; another team's ID
		// is 403; a range of ten years is refused.
		var most struct {
			Value float64 `json:"value"`
		}
		e.do("GET", "/teams/"+a.ID+"/metrics/max?metric=concurrent_sandboxes", a.APIKey.Key, nil).want(t, http.StatusOK).decode(t, &most)
		if most.Value != 2 {
			t.Fatalf("alpha's most concurrent sandboxes: %v, want 2", most.Value)
		}
		var points []struct {
			Concurrent int     `json:"concurrentSandboxes"`
			Rate       float64 `json:"sandboxStartRate"`
		}
		e.do("GET", "/teams/"+a.ID+"/metrics", a.APIKey.Key, nil).want(t, http.StatusOK).decode(t, &points)
		peak, creates := 0, 0.0
		for _, p := range points {
			peak, creates = max(peak, p.Concurrent), creates+p.Rate*10 // an hour in 360 steps of 10 s
		}
		if len(points) != 361 || peak != 2 || creates < 1.99 || creates > 2.01 {
			t.Fatalf("alpha's last hour: %d points, peak %d, %.2f creates; want 361, 2 and 2", len(points), peak, creates)
		}
		e.do("GET", "/teams/"+b.ID+"/metrics", a.APIKey.Key, nil).want(t, http.StatusForbidden)
		tenYears := time.Now().AddDate(-10, 0, 0).Unix()
		e.do("GET", fmt.Sprintf("/teams/%s/metrics?start=%d", a.ID, tenYears), a.APIKey.Key, nil).want(t, http.StatusBadRequest)
		e.do("GET", "/teams/"+a.ID+"/metrics/max?metric=cpu", a.APIKey.Key, nil).want(t, http.StatusBadRequest)

		// The audit log: alpha's entries are alpha's, with the refused
		// create; the operator reads beta's.
		var audit auditPage
		e.do("GET", "/v1/audit?action=sandbox.create", a.APIKey.Key, nil).want(t, http.StatusOK).decode(t, &audit)
		var statuses []int
		for _, en := range audit.Entries {
			if en.TeamID != a.ID || en.Source != "127.0.0.1" || !strings.HasPrefix(en.Actor, "api_key:") {
				t.Fatalf("alpha's audit entry: %+v", en)
			}
			statuses = append(statuses, en.Status)
		}
		if fmt.Sprint(statuses) != "[201 429 201]" {
			t.Fatalf("alpha's creates in the audit log: %v, want [201 429 201]", statuses)
		}
		if audit.Entries[1].Error == "" || audit.Entries[0].Target != sa.SandboxID {
			t.Fatalf("audit entries: %+v", audit.Entries)
		}
		var ofB, teamCreates auditPage
		e.admin(adm, "GET", "/v1/audit?team="+b.ID, "", nil).want(t, http.StatusOK).decode(t, &ofB)
		var actions []string
		for _, en := range ofB.Entries {
			if en.TeamID != b.ID {
				t.Fatalf("beta's audit log holds %+v", en)
			}
			actions = append(actions, fmt.Sprintf("%s %d", en.Action, en.Status))
		}
		if fmt.Sprint(actions) != "[team.create 201 sandbox.create 201 sandbox.kill 404]" {
			t.Fatalf("beta's audit log as the operator reads it: %v", actions)
		}
		e.admin(adm, "GET", "/v1/audit?action=team.create", "", nil).want(t, http.StatusOK).decode(t, &teamCreates)
		if len(teamCreates.Entries) != 4 || !strings.HasPrefix(teamCreates.Entries[0].Actor, "admin:") || teamCreates.Entries[0].Status != 400 {
			t.Fatalf("team creates in the audit log (two refused, two made): %+v", teamCreates.Entries)
		}
		e.do("GET", "/v1/audit?since=yesterday", a.APIKey.Key, nil).want(t, http.StatusBadRequest)

		// Deleting a team that runs a sandbox needs force.
		e.admin(adm, "DELETE", "/v1/teams/"+b.ID, "", nil).want(t, http.StatusConflict)
		e.admin(adm, "DELETE", "/v1/teams/"+b.ID+"?force=true", "", nil).want(t, http.StatusNoContent)
		e.do("GET", "/v2/sandboxes", b.APIKey.Key, nil).want(t, http.StatusUnauthorized)
		e.admin(adm, "DELETE", "/v1/teams/"+b.ID, "", nil).want(t, http.StatusNotFound)
	})
}

// TestEventStream: GET /v1/events streams the team's events as they
// happen, and from after Last-Event-ID on a reconnect.
func TestEventStream(t *testing.T) {
	e := newTestenv(t, controlplane.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream := func(last string) (*http.Response, func() (string, lifecycleEvent)) {
		req, _ := http.NewRequestWithContext(ctx, "GET", e.url+"/v1/events", nil)
		req.Header.Set("X-API-Key", e.key)
		if last != "" {
			req.Header.Set("Last-Event-ID", last)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("stream: %v %v", resp, err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp, sseReader(t, resp)
	}
	_, next := stream("")
	c := e.create(t, map[string]any{"templateID": "base"})
	id1, ev := next()
	if ev.Type != "sandbox.lifecycle.created" || ev.SandboxID != c.SandboxID {
		t.Fatalf("first streamed event: %+v", ev)
	}
	e.do("POST", "/sandboxes/"+c.SandboxID+"/pause", e.key, nil).want(t, http.StatusNoContent)
	if _, ev := next(); ev.Type != "sandbox.lifecycle.paused" {
		t.Fatalf("second streamed event: %+v", ev)
	}
	// A reconnect after the first gets the second again.
	_, again := stream(id1)
	if _, ev := again(); ev.Type != "sandbox.lifecycle.paused" || ev.SandboxID != c.SandboxID {
		t.Fatalf("resumed stream's first event: %+v", ev)
	}
	e.do("GET", "/v1/events", e.key, nil, "Last-Event-ID", "garbage").want(t, http.StatusBadRequest)
}

// sseReader returns a function that reads the stream's next event.
func sseReader(t *testing.T, resp *http.Response) func() (string, lifecycleEvent) {
	buf := make([]byte, 0, 64<<10)
	return func() (string, lifecycleEvent) {
		t.Helper()
		for {
			if i := strings.Index(string(buf), "\n\n"); i >= 0 {
				block := string(buf[:i])
				buf = buf[i+2:]
				var id, data string
				for line := range strings.SplitSeq(block, "\n") {
					if v, ok := strings.CutPrefix(line, "id: "); ok {
						id = v
					}
					if v, ok := strings.CutPrefix(line, "data: "); ok {
						data = v
					}
				}
				if data == "" {
					continue // a keep-alive
				}
				var ev lifecycleEvent
				if err := json.Unmarshal([]byte(data), &ev); err != nil {
					t.Fatalf("event data %q: %v", data, err)
				}
				return id, ev
			}
			chunk := make([]byte, 4096)
			n, err := resp.Body.Read(chunk)
			if err != nil {
				t.Fatalf("read stream: %v", err)
			}
			buf = append(buf, chunk[:n]...)
		}
	}
}
