package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
)

// The proxy counts requests by kind and status class, and the bytes both
// ways as they flow, a WebSocket's frames included; no series names a
// sandbox.
func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewMetrics(reg); !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
		t.Fatalf("second NewMetrics on one registry: %v, want AlreadyRegisteredError", err)
	}
	_, envdPort := newBackend(t)
	ws := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ws" {
			backendHandler(w, r)
			return
		}
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, msg, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, msg); err != nil {
				return
			}
		}
	}))
	t.Cleanup(ws.Close)
	userPort := portOf(t, ws.Listener.Addr())
	s := newStack(t, Config{EnvdPort: envdPort, Metrics: m})
	s.add(sbx, nil)
	c := client()

	body := strings.Repeat("x", 1000)
	resp, got := do(t, c, newRequest(t, s, FormHeader, sbx, userPort, "POST", "/echo", body))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(got), body) {
		t.Fatalf("POST: %d %s", resp.StatusCode, got)
	}
	if resp, got := do(t, c, newRequest(t, s, FormPath, sbx, envdPort, "GET", "/small", "")); resp.StatusCode != http.StatusOK {
		t.Fatalf("envd GET: %d %s", resp.StatusCode, got)
	}
	if resp, got := do(t, c, newRequest(t, s, FormPath, "nosuchsandbox", userPort, "GET", "/", "")); resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("unknown sandbox: %d %s", resp.StatusCode, got)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, fmt.Sprintf("ws%s/proxy/%s/%d/ws", strings.TrimPrefix(s.srv.URL, "http"), sbx, userPort), nil)
	if err != nil {
		t.Fatal(err)
	}
	msg := strings.Repeat("y", 5000)
	if err := conn.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	if _, echo, err := conn.Read(ctx); err != nil || string(echo) != msg {
		t.Fatalf("echo: %d bytes, %v", len(echo), err)
	}
	// The upgraded connection's bytes count while it is open: the echo's
	// once its write to the client returned, which may be just after the
	// client read it.
	atLeast := float64(len(body) + len(msg))
	for deadline := time.Now().Add(5 * time.Second); ; {
		in := testutil.ToFloat64(m.requestBytes.WithLabelValues(kindUser))
		out := testutil.ToFloat64(m.responseBytes.WithLabelValues(kindUser))
		if in >= atLeast && out >= atLeast {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("user request and response bytes %v and %v with the WebSocket open, want at least %v", in, out, atLeast)
		}
		time.Sleep(time.Millisecond)
	}
	conn.Close(websocket.StatusNormalClosure, "")

	want := map[[2]string]float64{{kindUser, "2xx"}: 1, {kindUser, "1xx"}: 1, {kindUser, "5xx"}: 1, {kindEnvd, "2xx"}: 1}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok := true
		for k, n := range want {
			if testutil.ToFloat64(m.requests.WithLabelValues(k[0], k[1])) != n {
				ok = false
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			b, _ := testutil.CollectAndFormat(m.requests, expfmt.TypeTextPlain, "roost_proxy_requests_total")
			t.Fatalf("requests:\n%s\nwant %v", b, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if out := testutil.ToFloat64(m.responseBytes.WithLabelValues(kindEnvd)); out != 2 {
		t.Errorf("envd response bytes %v, want 2 (\"ok\")", out)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if strings.Contains(l.GetValue(), sbx) || strings.Contains(l.GetValue(), "nosuchsandbox") {
					t.Errorf("%s has label %s=%q, a sandbox", f.GetName(), l.GetName(), l.GetValue())
				}
			}
		}
	}
}
