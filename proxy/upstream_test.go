package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/wire"
)

// envd's port and the sandboxes' own ports are dialled from separate pools.
func TestUpstreamPools(t *testing.T) {
	u := NewUpstream(49983, func(req *http.Request) int { n, _ := strconv.Atoi(req.URL.Port()); return n })
	defer u.Close()
	dialled := map[string]string{}
	refuse := func(pool string) func(context.Context, string, string) (net.Conn, error) {
		return func(_ context.Context, _, addr string) (net.Conn, error) {
			dialled[addr] = pool
			return nil, errors.New("refused by the test")
		}
	}
	u.user.DialContext, u.envd.DialContext = refuse("user"), refuse("envd")
	for _, target := range []string{"http://127.0.0.2:49983/health", "http://127.0.0.2:8000/"} {
		if _, err := u.RoundTrip(mustRequest(t, "GET", target)); err == nil {
			t.Fatalf("%s: dial was not refused", target)
		}
	}
	if dialled["127.0.0.2:49983"] != "envd" || dialled["127.0.0.2:8000"] != "user" {
		t.Fatalf("dialled %v", dialled)
	}
}

// A server that accepts and never answers is a timeout: 504, unmarked.
func TestUpstreamTimeout(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer srv.Close()
	u := NewUpstream(49983, func(*http.Request) int { return 80 })
	defer u.Close()
	u.user.ResponseHeaderTimeout = 50 * time.Millisecond
	_, err := u.RoundTrip(mustRequest(t, "GET", srv.URL+"/slow"))
	err = UpstreamError(err)
	if !errors.Is(err, errdefs.ErrTimeout) {
		t.Fatalf("round trip: %v, want ErrTimeout", err)
	}
	rec := httptest.NewRecorder()
	if status := WriteUpstreamError(rec, err, "did not answer in time"); status != http.StatusGatewayTimeout {
		t.Errorf("answered %d, want 504", status)
	}
	if len(rec.Header().Values("Roost-Proxy-Error")) != 0 {
		t.Error("a timeout is marked as a refused dial")
	}
}

// Connections to a sandbox are pooled by sandbox, not by address: the
// next sandbox on a destroyed one's address (a network slot is reused)
// never gets the connections made to the one before, which a VM that
// vanished never closed.
func TestUpstreamPoolsBySandbox(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	addr := netip.MustParseAddrPort(srv.Listener.Addr().String())
	u := NewUpstream(49983, func(*http.Request) int { return 80 })
	defer u.Close()
	get := func(id string) {
		t.Helper()
		req := mustRequest(t, "GET", "http://"+SandboxHost(id, addr)+"/")
		resp, err := u.RoundTrip(req.WithContext(ToSandbox(req.Context(), id, addr)))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	get("sb-one")
	get("sb-one")
	if n := conns.Load(); n != 1 {
		t.Fatalf("two requests to one sandbox made %d connections, want 1 (kept alive)", n)
	}
	get("sb-two")
	if n := conns.Load(); n != 2 {
		t.Errorf("a request to another sandbox at the same address made %d connections in all, want 2 (none shared)", n)
	}
}

// A sandbox port that refuses a connection makes the upstream ask the
// sandbox's envd to look for new servers (GET wire.EnvdScanPath, no
// token) before the round trip returns, inline or pooled; a refusal on
// envd's own port does not.
func TestUpstreamKicksEnvdOnRefusal(t *testing.T) {
	kicks := make(chan *http.Request, 8)
	envd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		kicks <- r
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer envd.Close()
	envdAddr := netip.MustParseAddrPort(envd.Listener.Addr().String())
	closed := closedPort(t)
	u := NewUpstream(int(envdAddr.Port()), func(req *http.Request) int { n, _ := strconv.Atoi(req.URL.Port()); return n })
	defer u.Close()
	send := func(method string, to netip.AddrPort, body io.Reader) error {
		t.Helper()
		req, err := http.NewRequest(method, "http://"+SandboxHost("sb-kick.1", to)+"/app", body)
		if err != nil {
			t.Fatal(err)
		}
		_, err = u.RoundTrip(req.WithContext(ToSandbox(req.Context(), "sb-kick.1", to)))
		return err
	}
	user := netip.AddrPortFrom(envdAddr.Addr(), closed)
	for _, c := range []struct {
		method string
		body   io.Reader
	}{{"GET", nil}, {"POST", strings.NewReader("a body")}} {
		if err := send(c.method, user, c.body); err == nil {
			t.Fatalf("%s to a closed port: no error", c.method)
		}
		select {
		case r := <-kicks:
			if r.Method != http.MethodGet || r.URL.Path != wire.EnvdScanPath || r.Header.Get(wire.HeaderAccessToken) != "" {
				t.Errorf("%s refused: envd got %s %s (token %q)", c.method, r.Method, r.URL.Path, r.Header.Get(wire.HeaderAccessToken))
			}
		default:
			t.Errorf("%s refused: envd was not asked to look", c.method)
		}
	}

	// envd's own port refusing: there is no envd to ask.
	envd.Close()
	if err := send("GET", envdAddr, nil); err == nil {
		t.Fatal("GET to envd's closed port: no error")
	}
	if len(kicks) != 0 {
		t.Error("a refusal on envd's port kicked envd")
	}
}

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return uint16(port)
}
