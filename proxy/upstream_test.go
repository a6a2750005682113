package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"roost.dev/roost/errdefs"
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
