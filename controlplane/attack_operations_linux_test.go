package controlplane_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"roost.dev/roost/controlplane"
)

// TestAttackWebhookSSRF: a team aims webhooks at what the control plane
// can reach and it cannot: a loopback service, the host's own address,
// the LAN, the cloud metadata services, an address written in other
// forms, and an allowed endpoint that redirects to the loopback service.
// None is registered, and the redirect is not followed: the loopback
// service gets nothing.
func TestAttackWebhookSSRF(t *testing.T) {
	var hits atomic.Int64
	victimLn, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	victim := &http.Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) })}
	go victim.Serve(victimLn)
	t.Cleanup(func() { victim.Close() })
	victimURL := "http://" + victimLn.Addr().String() + "/internal"
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, victimURL, http.StatusFound)
	}))
	t.Cleanup(redirector.Close)

	// Only the redirector's address is allowed, as an operator would
	// allow one internal receiver.
	e := newTestenv(t, controlplane.Config{WebhookAllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	targets := []string{victimURL, "http://[::1]:80/", "http://[::ffff:127.0.0.2]/", "http://0.0.0.0/", "http://10.0.0.1/",
		"http://192.168.1.1/", "http://172.16.0.1/", "http://169.254.169.254/latest/meta-data/", "http://100.100.100.200/",
		"http://2130706434/", "http://0x7f000002/", "http://224.0.0.1/", "file:///etc/passwd", "gopher://127.0.0.1/"}
	if own := hostAddress(t); own != "" {
		targets = append(targets, "http://"+own+"/")
	}
	for _, u := range targets {
		r := e.do("POST", "/events/webhooks", e.key, map[string]any{"url": u, "signatureSecret": "attacker-secret",
			"events": []string{"sandbox.lifecycle.created"}})
		if r.status != http.StatusBadRequest {
			t.Errorf("webhook to %s: status %d, want 400; %s", u, r.status, r.body)
		}
	}
	id := e.webhook(t, e.key, redirector.URL, "attacker-secret")
	e.create(t, map[string]any{"templateID": "base"})
	var log []struct {
		Attempts int    `json:"attempts"`
		Status   int    `json:"lastStatus"`
		State    string `json:"state"`
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		e.do("GET", "/events/webhooks/"+id+"/deliveries", e.key, nil).want(t, http.StatusOK).decode(t, &log)
		if len(log) > 0 && log[0].Attempts >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(log) == 0 || log[0].Attempts < 2 || log[0].Status != http.StatusFound || log[0].State != "pending" {
		t.Fatalf("the redirected delivery's log: %+v; want failed attempts that answered 302", log)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the loopback service behind the redirect got %d requests", n)
	}
}

// hostAddress is one of this host's own non-loopback addresses, or "".
func hostAddress(t *testing.T) string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP.String()
		}
	}
	return ""
}

// TestAttackCrossTeamOperations: a team goes after another's events,
// webhooks, delivery logs, audit entries and team metrics, and after the
// operator's routes with its own key; every one is refused or comes back
// empty, and the operator's token is needed for the operator's routes.
func TestAttackCrossTeamOperations(t *testing.T) {
	e := newTestenv(t, controlplane.Config{WebhookAllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	victimTeam := e.teamOf(t, e.key)
	rc := newReceiver(t, "victim-secret", nil)
	hook := e.webhook(t, e.key, rc.srv.URL, "victim-secret")
	c := e.create(t, map[string]any{"templateID": "base", "metadata": map[string]string{"secret": "victim-metadata"}})
	e.events(t, e.key, "/events/sandboxes", "sandbox.lifecycle.created")

	other, err := e.cp.CreateTeamWithKey(t.Context(), "intruders")
	if err != nil {
		t.Fatal(err)
	}
	for _, rt := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/events/webhooks/" + hook, http.StatusNotFound},
		{"PATCH", "/events/webhooks/" + hook, http.StatusNotFound},
		{"DELETE", "/events/webhooks/" + hook, http.StatusNotFound},
		{"GET", "/events/webhooks/" + hook + "/deliveries", http.StatusNotFound},
		{"GET", "/teams/" + victimTeam + "/metrics", http.StatusForbidden},
		{"GET", "/teams/" + victimTeam + "/metrics/max?metric=concurrent_sandboxes", http.StatusForbidden},
		{"GET", "/v1/teams", http.StatusUnauthorized},
		{"POST", "/admin/teams/" + victimTeam + "/sandboxes/kill", http.StatusUnauthorized},
		{"POST", "/admin/teams/" + victimTeam + "/api-keys", http.StatusUnauthorized},
		{"GET", "/admin/sandboxes/running-counts", http.StatusUnauthorized},
	} {
		r := e.do(rt.method, rt.path, other, map[string]any{"enabled": false, "name": "x"})
		if r.status != rt.want || strings.Contains(string(r.body), c.SandboxID) {
			t.Errorf("%s %s with another team's key: %d %s, want %d", rt.method, rt.path, r.status, r.body, rt.want)
		}
	}
	// The key as an operator token, and another team named in X-Team-ID.
	e.do("GET", "/v1/teams", "", nil, "X-Admin-Token", other).want(t, http.StatusUnauthorized)
	e.do("GET", "/v2/sandboxes", "", nil, "X-Admin-Token", other, "X-Team-ID", victimTeam).want(t, http.StatusUnauthorized)
	e.do("GET", "/events/sandboxes", other, nil, "X-Team-ID", victimTeam).want(t, http.StatusForbidden)

	// Lists come back empty of the victim's.
	for _, path := range []string{"/events/sandboxes", "/events/sandboxes/" + c.SandboxID, "/events/webhooks"} {
		r := e.do("GET", path, other, nil).want(t, http.StatusOK)
		if strings.Contains(string(r.body), c.SandboxID) || strings.Contains(string(r.body), "victim-metadata") ||
			strings.Contains(string(r.body), hook) || strings.Contains(string(r.body), victimTeam) {
			t.Errorf("GET %s with another team's key shows the victim's: %s", path, r.body)
		}
	}
	// The audit log is the intruder's own (its refused tries included),
	// whatever team it names.
	var audit auditPage
	e.do("GET", "/v1/audit?team="+victimTeam, other, nil).want(t, http.StatusOK).decode(t, &audit)
	for _, en := range audit.Entries {
		if en.TeamID == victimTeam || en.Target == c.SandboxID {
			t.Errorf("the intruder reads the victim's audit entry %+v", en)
		}
	}
	// A stream of the other team's events never carries the victim's.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.url+"/v1/events", nil)
	req.Header.Set("X-API-Key", other)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	e.do("DELETE", "/sandboxes/"+c.SandboxID, e.key, nil).want(t, http.StatusNoContent)
	buf := make([]byte, 64<<10)
	n, _ := readUntil(resp, buf, 2*time.Second)
	if strings.Contains(string(buf[:n]), c.SandboxID) {
		t.Fatalf("another team's stream carried the victim's event: %s", buf[:n])
	}
	// The victim's own webhook still works.
	if got := rc.types(2, 15*time.Second); len(got) != 2 {
		t.Fatalf("the victim's webhook got %v after the attacks", got)
	}
}

// readUntil reads what the response sends within d.
func readUntil(resp *http.Response, buf []byte, d time.Duration) (int, error) {
	done := make(chan struct{})
	var n int
	go func() {
		defer close(done)
		for n < len(buf) {
			m, err := resp.Body.Read(buf[n:])
			n += m
			if err != nil {
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(d):
		resp.Body.Close()
		<-done
	}
	return n, nil
}

// teamOf is the team of a key, as GET /teams answers it.
func (e *testenv) teamOf(t *testing.T, key string) string {
	t.Helper()
	var teams []struct {
		TeamID string `json:"teamID"`
	}
	e.do("GET", "/teams", key, nil).want(t, http.StatusOK).decode(t, &teams)
	return teams[0].TeamID
}
