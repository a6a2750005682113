package controlplane_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"roost.dev/roost/controlplane"
)

// receiver is a webhook endpoint on loopback that records what it gets.
type receiver struct {
	t      *testing.T
	secret string
	srv    *httptest.Server
	// answer decides each request's status; nil answers 200.
	answer func() int

	mu     sync.Mutex
	events []lifecycleEvent
	tries  int
}

func newReceiver(t *testing.T, secret string, answer func() int) *receiver {
	rc := &receiver{t: t, secret: secret, answer: answer}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	rc.tries++
	rc.mu.Unlock()
	if rc.answer != nil {
		if code := rc.answer(); code != http.StatusOK {
			w.WriteHeader(code)
			return
		}
	}
	// E2B's signature, and roost's HMAC.
	sum := sha256.Sum256([]byte(rc.secret + string(body)))
	if got, want := r.Header.Get("e2b-signature"), strings.TrimRight(base64.StdEncoding.EncodeToString(sum[:]), "="); got != want {
		rc.t.Errorf("e2b-signature %q, want %q", got, want)
	}
	ts, mac, _ := strings.Cut(strings.TrimPrefix(r.Header.Get("Roost-Signature"), "t="), ",v1=")
	m := hmac.New(sha256.New, []byte(rc.secret))
	m.Write([]byte(ts + "."))
	m.Write(body)
	if mac != hex.EncodeToString(m.Sum(nil)) {
		rc.t.Errorf("Roost-Signature %q does not verify", r.Header.Get("Roost-Signature"))
	}
	if r.Header.Get("e2b-signature-version") != "v1" || r.Header.Get("e2b-webhook-id") == "" || r.Header.Get("e2b-delivery-id") == "" {
		rc.t.Errorf("delivery headers: %v", r.Header)
	}
	var ev lifecycleEvent
	if err := json.Unmarshal(body, &ev); err != nil {
		rc.t.Errorf("delivery body %s: %v", body, err)
	}
	rc.mu.Lock()
	rc.events = append(rc.events, ev)
	rc.mu.Unlock()
}

// types waits until the receiver got n events and returns their types.
func (rc *receiver) types(n int, within time.Duration) []string {
	rc.t.Helper()
	deadline := time.Now().Add(within)
	for {
		rc.mu.Lock()
		var got []string
		for _, ev := range rc.events {
			got = append(got, ev.Type)
		}
		rc.mu.Unlock()
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (e *testenv) webhook(t *testing.T, key, url, secret string) string {
	t.Helper()
	var wh struct {
		ID string `json:"id"`
	}
	e.do("POST", "/events/webhooks", key, map[string]any{"name": "test", "url": url, "signatureSecret": secret,
		"events": []string{"sandbox.lifecycle.created", "sandbox.lifecycle.paused", "sandbox.lifecycle.resumed", "sandbox.lifecycle.killed"}}).
		want(t, http.StatusCreated).decode(t, &wh)
	return wh.ID
}

// TestWebhooks: a healthy receiver gets every event in order, signed; one
// that fails for 30 s then recovers gets them all, retried; one that
// hangs holds up no create; URLs of this host or private ranges are
// refused unless allowed; another team sees none of it.
func TestWebhooks(t *testing.T) {
	e := newTestenv(t, controlplane.Config{WebhookAllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})

	for _, bad := range []string{"http://127.0.0.2:8080/", "http://10.1.2.3/", "http://169.254.169.254/latest", "http://[::1]/",
		"http://100.64.0.1/", "ftp://127.0.0.1/", "http://nosuchhost.invalid/", "not a url"} {
		e.do("POST", "/events/webhooks", e.key, map[string]any{"url": bad, "signatureSecret": "secret-1", "events": []string{"sandbox.lifecycle.created"}}).
			want(t, http.StatusBadRequest)
	}
	e.do("POST", "/events/webhooks", e.key, map[string]any{"url": "http://127.0.0.1:1/", "signatureSecret": "short", "events": []string{"sandbox.lifecycle.created"}}).
		want(t, http.StatusBadRequest)
	e.do("POST", "/events/webhooks", e.key, map[string]any{"url": "http://127.0.0.1:1/", "signatureSecret": "secret-1", "events": []string{"nope"}}).
		want(t, http.StatusBadRequest)

	healthy := newReceiver(t, "secret-healthy", nil)
	start := time.Now()
	failing := newReceiver(t, "secret-failing", func() int {
		if time.Since(start) < 30*time.Second {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	release := make(chan struct{})
	hanging := newReceiver(t, "secret-hanging", func() int { <-release; return http.StatusOK })
	defer close(release)
	healthyID := e.webhook(t, e.key, healthy.srv.URL+"/hook", "secret-healthy")
	failingID := e.webhook(t, e.key, failing.srv.URL, "secret-failing")
	e.webhook(t, e.key, hanging.srv.URL, "secret-hanging")

	// Another team sees none of them.
	other, err := e.cp.CreateTeamWithKey(t.Context(), "other")
	if err != nil {
		t.Fatal(err)
	}
	e.do("GET", "/events/webhooks/"+healthyID, other, nil).want(t, http.StatusNotFound)
	e.do("GET", "/events/webhooks/"+healthyID+"/deliveries", other, nil).want(t, http.StatusNotFound)
	e.do("DELETE", "/events/webhooks/"+healthyID, other, nil).want(t, http.StatusNotFound)
	var theirs []any
	e.do("GET", "/events/webhooks", other, nil).want(t, http.StatusOK).decode(t, &theirs)
	if len(theirs) != 0 {
		t.Fatalf("another team lists %v", theirs)
	}

	// Two sandboxes through their lives, while one endpoint hangs: every
	// create and kill answers.
	var ids []string
	for range 2 {
		c := e.create(t, map[string]any{"templateID": "base"})
		ids = append(ids, c.SandboxID)
		e.do("POST", "/sandboxes/"+c.SandboxID+"/pause", e.key, nil).want(t, http.StatusNoContent)
		e.do("POST", "/sandboxes/"+c.SandboxID+"/connect", e.key, map[string]any{"timeout": 60}).want(t, http.StatusCreated)
		e.do("DELETE", "/sandboxes/"+c.SandboxID, e.key, nil).want(t, http.StatusNoContent)
	}
	want := strings.Repeat("sandbox.lifecycle.created sandbox.lifecycle.paused sandbox.lifecycle.resumed sandbox.lifecycle.killed ", 2)
	want = strings.TrimSpace(want)
	if got := strings.Join(healthy.types(8, 20*time.Second), " "); got != want {
		t.Fatalf("healthy receiver got\n%s\nwant\n%s", got, want)
	}
	for i, ev := range healthy.events {
		if ev.SandboxID != ids[i/4] {
			t.Fatalf("event %d is of %s, want %s", i, ev.SandboxID, ids[i/4])
		}
	}
	if got := strings.Join(failing.types(8, 75*time.Second), " "); got != want {
		t.Fatalf("receiver that failed for 30 s got\n%s\nwant\n%s", got, want)
	}
	var log []struct {
		State    string `json:"state"`
		Attempts int    `json:"attempts"`
		Status   int    `json:"lastStatus"`
	}
	e.do("GET", "/events/webhooks/"+failingID+"/deliveries", e.key, nil).want(t, http.StatusOK).decode(t, &log)
	if len(log) != 8 || log[7].State != "delivered" || log[7].Attempts < 2 || log[7].Status != 200 {
		t.Fatalf("the failing webhook's delivery log: %+v", log)
	}

	// Disabled, a webhook gets nothing more.
	e.do("PATCH", "/events/webhooks/"+healthyID, e.key, map[string]any{"enabled": false}).want(t, http.StatusOK)
	e.create(t, map[string]any{"templateID": "base"})
	time.Sleep(2 * time.Second)
	if n := len(healthy.types(0, 0)); n != 8 {
		t.Fatalf("a disabled webhook got %d events, want still 8", n)
	}
	e.do("PATCH", "/events/webhooks/"+healthyID, e.key, map[string]any{"url": "http://10.0.0.1/"}).want(t, http.StatusBadRequest)
	e.do("DELETE", "/events/webhooks/"+healthyID, e.key, nil).want(t, http.StatusNoContent)
	e.do("GET", "/events/webhooks/"+healthyID, e.key, nil).want(t, http.StatusNotFound)
}
