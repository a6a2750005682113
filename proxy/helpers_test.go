package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"roost.dev/roost/bufpool"
	"roost.dev/roost/errdefs"
	"roost.dev/roost/wire"
)

const agentToken = "agent-secret"

// testAgent implements the host agent's side of the contract, the edge of
// this package: /proxy/{id}/{port}/{rest...} with its token in
// Roost-Agent-Token, forwarded to 127.0.0.1:{port}/{rest} with escaping,
// query and Host untouched; 502 JSON marked with the dial-error header when the
// port refuses the connection. (The real agent needs a runtime to own a
// sandbox before it proxies to it.)
type testAgent struct {
	*httptest.Server
	requests atomic.Int64
	mu       sync.Mutex // guards remotes
	remotes  []string   // the proxy's address of each request, in order
	onProxy  func()     // called on every proxied request, when set
}

type agentTarget struct{ port, rest string }

func newTestAgent(t testing.TB) *testAgent {
	a := &testAgent{}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			at := pr.In.Context().Value(agentTarget{}).(agentTarget)
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", "127.0.0.1:"+at.port
			pr.Out.URL.Path, _ = url.PathUnescape(at.rest)
			pr.Out.URL.RawPath = at.rest
			pr.Out.URL.RawQuery = pr.In.URL.RawQuery
			pr.Out.Host = pr.In.Host
			for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-Prefix"} {
				if v, ok := pr.In.Header[h]; ok {
					pr.Out.Header[h] = v
				}
			}
		},
		Transport:     &http.Transport{MaxIdleConnsPerHost: 1024, DisableCompression: true},
		BufferPool:    bufpool.New(),
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			var op *net.OpError
			if errors.As(err, &op) && op.Op == "dial" {
				w.Header().Set(wire.HeaderProxyError, wire.ProxyErrorDial) // as the agent marks it
			}
			errdefs.WriteHTTP(w, http.StatusBadGateway, err.Error())
		},
		ErrorLog: slog.NewLogLogger(slog.DiscardHandler, slog.LevelDebug),
	}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.requests.Add(1)
		a.mu.Lock()
		a.remotes = append(a.remotes, r.RemoteAddr)
		a.mu.Unlock()
		if r.Header.Get(wire.HeaderAgentToken) != agentToken {
			errdefs.WriteHTTP(w, http.StatusUnauthorized, "missing or invalid agent token")
			return
		}
		r.Header.Del(wire.HeaderAgentToken)
		tail, ok := strings.CutPrefix(r.URL.EscapedPath(), "/proxy/")
		if !ok {
			errdefs.WriteHTTP(w, http.StatusNotFound, "not a proxy path")
			return
		}
		parts := strings.SplitN(tail, "/", 3)
		if len(parts) < 2 {
			errdefs.WriteHTTP(w, http.StatusBadRequest, "bad proxy path")
			return
		}
		rest := "/"
		if len(parts) == 3 {
			rest += parts[2]
		}
		if a.onProxy != nil {
			a.onProxy()
		}
		_ = http.NewResponseController(w).EnableFullDuplex() // as the agent does
		rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), agentTarget{}, agentTarget{parts[1], rest})))
	}))
	t.Cleanup(a.Close)
	return a
}

// resolver is a control plane's store, reduced to a map.
type resolver struct {
	mu      sync.Mutex // guards targets
	targets map[string]Target
	calls   atomic.Int64
}

func (r *resolver) Resolve(ctx context.Context, id string) (Target, error) {
	r.calls.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.targets[id]
	if !ok {
		return Target{}, fmt.Errorf("sandbox %s: %w", id, errdefs.ErrNotFound)
	}
	return t, nil
}

func (r *resolver) set(t Target) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.targets == nil {
		r.targets = make(map[string]Target)
	}
	r.targets[t.SandboxID] = t
}

func (r *resolver) remove(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.targets, id)
}

// echo is what the echo backend saw.
type echo struct {
	Method  string
	URI     string
	Host    string
	Body    string
	Headers map[string]string
}

var echoedHeaders = []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-Prefix",
	"Authorization", wire.HeaderTrafficToken, wire.HeaderAgentToken, "X-Access-Token"}

// newBackend is a sandbox's HTTP server: it echoes requests, and redirects
// /dir to /dir/ as python3 -m http.server does for directories.
func newBackend(t testing.TB) (*httptest.Server, int) {
	srv := httptest.NewServer(http.HandlerFunc(backendHandler))
	t.Cleanup(srv.Close)
	return srv, portOf(t, srv.Listener.Addr())
}

func backendHandler(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/dir":
		// http.server: the Location is the request path plus "/".
		w.Header().Set("Location", r.URL.EscapedPath()+"/")
		w.WriteHeader(http.StatusMovedPermanently)
		return
	case "/dir/":
		_, _ = io.WriteString(w, "listing")
		return
	case "/absolute":
		w.Header().Set("Location", "http://"+r.Host+"/dir/")
		w.WriteHeader(http.StatusFound)
		return
	case "/small":
		_, _ = io.WriteString(w, "ok")
		return
	}
	body, _ := io.ReadAll(r.Body)
	e := echo{Method: r.Method, URI: r.RequestURI, Host: r.Host, Body: string(body), Headers: map[string]string{}}
	for _, h := range echoedHeaders {
		if v := r.Header.Get(h); v != "" {
			e.Headers[h] = v
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(e)
}

func portOf(t testing.TB, a net.Addr) int {
	t.Helper()
	_, p, err := net.SplitHostPort(a.String())
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// stack is a proxy in front of a test agent, served on loopback.
type stack struct {
	proxy *Proxy
	agent *testAgent
	res   *resolver
	srv   *httptest.Server
}

func newStack(t testing.TB, cfg Config) *stack {
	s := &stack{agent: newTestAgent(t), res: &resolver{}}
	s.proxy = New(cfg, s.res, slog.New(slog.DiscardHandler))
	s.srv = httptest.NewServer(s.proxy)
	t.Cleanup(func() {
		s.srv.Close()
		s.proxy.Close()
	})
	return s
}

// add registers a running sandbox on the test agent.
func (s *stack) add(id string, mod func(*Target)) {
	u, _ := url.Parse(s.agent.URL)
	tg := Target{SandboxID: id, AgentURL: u, AgentToken: agentToken, PublicTraffic: true}
	if mod != nil {
		mod(&tg)
	}
	s.res.set(tg)
}

// client never follows redirects unless a test says so.
func client() *http.Client {
	return &http.Client{
		Transport:     &http.Transport{MaxIdleConnsPerHost: 256},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

type errorBody struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func do(t testing.TB, c *http.Client, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, body
}
