package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/wire"
)

const sbx = "abc123"

// newRequest builds a request for form: Host, headers, or path.
func newRequest(t testing.TB, s *stack, form Form, id string, port int, method, pathQuery, body string) *http.Request {
	t.Helper()
	target := s.srv.URL + pathQuery
	if form == FormPath {
		target = s.srv.URL + "/proxy/" + id + "/" + strconv.Itoa(port) + pathQuery
	}
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, target, rd)
	if err != nil {
		t.Fatal(err)
	}
	switch form {
	case FormHost:
		req.Host = fmt.Sprintf("%d-%s.localhost:%s", port, id, req.URL.Port())
	case FormHeader:
		req.Header.Set(wire.HeaderSandboxID, id)
		req.Header.Set(wire.HeaderSandboxPort, strconv.Itoa(port))
	}
	return req
}

func TestRoutingForms(t *testing.T) {
	s := newStack(t, Config{})
	_, port := newBackend(t)
	s.add(sbx, nil)
	c := client()
	for _, form := range []Form{FormHost, FormHeader, FormPath} {
		for _, tc := range []struct{ method, pathQuery, body string }{
			{"GET", "/", ""},
			{"GET", "/a/b", ""},
			{"GET", "/a/b/", ""},
			{"GET", "/a%2Fb%20c/d%3F/", ""},
			{"GET", "//double//slash//", ""},
			{"GET", "/q?x=1&y=%20z&x=2&e=%26", ""},
			{"GET", "/empty?", ""},
			{"GET", "/semi?a=1;b=2&c=%zz", ""},
			{"POST", "/post/", `{"hello":"world"}`},
			{"PUT", "/put?x=1", "payload"},
			{"DELETE", "/thing/1", ""},
		} {
			name := form.String() + " " + tc.method + " " + tc.pathQuery
			req := newRequest(t, s, form, sbx, port, tc.method, tc.pathQuery, tc.body)
			req.Header.Set("Authorization", "Bearer user")
			req.Header.Set("X-Forwarded-For", "6.6.6.6") // not trusted: the proxy is the edge
			resp, body := do(t, c, req)
			if resp.StatusCode != http.StatusOK {
				t.Errorf("%s: status %d: %s", name, resp.StatusCode, body)
				continue
			}
			var e echo
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("%s: %v: %s", name, err, body)
			}
			wantURI := tc.pathQuery
			if e.Method != tc.method || e.URI != wantURI || e.Body != tc.body {
				t.Errorf("%s: backend saw %s %s %q", name, e.Method, e.URI, e.Body)
			}
			if e.Host != req.Host {
				t.Errorf("%s: backend saw Host %q, want the client's %q", name, e.Host, req.Host)
			}
			if e.Headers["X-Forwarded-For"] != "127.0.0.1" || e.Headers["X-Forwarded-Host"] != req.Host ||
				e.Headers["X-Forwarded-Proto"] != "http" || e.Headers["Authorization"] != "Bearer user" {
				t.Errorf("%s: forwarded headers %v", name, e.Headers)
			}
			if _, ok := e.Headers[wire.HeaderAgentToken]; ok {
				t.Errorf("%s: agent token reached the sandbox", name)
			}
			wantPrefix := ""
			if form == FormPath {
				wantPrefix = "/proxy/" + sbx + "/" + strconv.Itoa(port)
			}
			if e.Headers["X-Forwarded-Prefix"] != wantPrefix {
				t.Errorf("%s: X-Forwarded-Prefix %q, want %q", name, e.Headers["X-Forwarded-Prefix"], wantPrefix)
			}
		}
	}
}

func TestPathFormRedirects(t *testing.T) {
	s := newStack(t, Config{})
	_, port := newBackend(t)
	s.add(sbx, nil)
	prefix := "/proxy/" + sbx + "/" + strconv.Itoa(port)
	for _, tc := range []struct{ path, want string }{
		{"/dir", prefix + "/dir/"},     // root-relative, as python3 -m http.server
		{"/dir?x=1", prefix + "/dir/"}, // http.server drops the query; we only prefix
		{"/absolute", "http://" + strings.TrimPrefix(s.srv.URL, "http://") + prefix + "/dir/"},
		{"", prefix + "/"}, // the bare prefix gets its slash, from the proxy itself
	} {
		resp, body := do(t, client(), newRequest(t, s, FormPath, sbx, port, "GET", tc.path, ""))
		if resp.StatusCode/100 != 3 || resp.Header.Get("Location") != tc.want {
			t.Errorf("GET %s: %d Location %q, want %q (%s)", tc.path, resp.StatusCode, resp.Header.Get("Location"), tc.want, body)
		}
	}
	// A browser follows: exactly one redirect, then the listing.
	for _, path := range []string{"/dir", "/absolute"} {
		hops := 0
		c := &http.Client{CheckRedirect: func(req *http.Request, via []*http.Request) error {
			hops++
			if len(via) > 3 {
				return errors.New("redirect loop")
			}
			return nil
		}}
		resp, body := do(t, c, newRequest(t, s, FormPath, sbx, port, "GET", path, ""))
		if resp.StatusCode != http.StatusOK || string(body) != "listing" || hops != 1 ||
			resp.Request.URL.Path != prefix+"/dir/" {
			t.Errorf("follow %s: %d %q after %d hops at %s", path, resp.StatusCode, body, hops, resp.Request.URL)
		}
	}
	// The Host form needs no rewriting: the sandbox's own redirect stands.
	resp, _ := do(t, client(), newRequest(t, s, FormHost, sbx, port, "GET", "/dir", ""))
	if loc := resp.Header.Get("Location"); loc != "/dir/" {
		t.Errorf("host form Location %q, want /dir/", loc)
	}
}

func TestWebSocket(t *testing.T) {
	s := newStack(t, Config{})
	ws := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	port := portOf(t, ws.Listener.Addr())
	s.add(sbx, nil)
	base := "ws" + strings.TrimPrefix(s.srv.URL, "http")
	for _, tc := range []struct {
		name string
		url  string
		opts *websocket.DialOptions
	}{
		{"path", fmt.Sprintf("%s/proxy/%s/%d/ws", base, sbx, port), nil},
		{"header", base + "/ws", &websocket.DialOptions{HTTPHeader: http.Header{
			wire.HeaderSandboxID: {sbx}, wire.HeaderSandboxPort: {strconv.Itoa(port)}}}},
		{"host", base + "/ws", &websocket.DialOptions{Host: fmt.Sprintf("%d-%s.localhost", port, sbx)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, _, err := websocket.Dial(ctx, tc.url, tc.opts)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer c.CloseNow()
			for i := range 3 {
				want := fmt.Sprintf("hello %d", i)
				if err := c.Write(ctx, websocket.MessageText, []byte(want)); err != nil {
					t.Fatal(err)
				}
				_, got, err := c.Read(ctx)
				if err != nil || string(got) != want {
					t.Fatalf("echo %q, %v; want %q", got, err, want)
				}
			}
			c.Close(websocket.StatusNormalClosure, "")
		})
	}
}

// TestStreaming: the first event arrives while the handler is still
// running (it waits for the client to have read it), so nothing buffers.
func TestStreaming(t *testing.T) {
	s := newStack(t, Config{})
	release := make(chan struct{})
	sse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "data: second\n\n")
	}))
	t.Cleanup(sse.Close)
	s.add(sbx, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // a deadlock guard, not a measurement
	defer cancel()
	req := newRequest(t, s, FormHeader, sbx, portOf(t, sse.Listener.Addr()), "GET", "/events", "")
	resp, err := client().Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "data: first\n" {
		t.Fatalf("first event %q, %v (buffered?)", line, err)
	}
	close(release)
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "\ndata: second\n\n" {
		t.Fatalf("rest %q, %v", rest, err)
	}
}

// TestDialRetry: the sandbox's server starts listening 500 ms after the
// first request reached the agent; the GET waits for it and succeeds.
func TestDialRetry(t *testing.T) {
	s := newStack(t, Config{DialRetry: 10 * time.Second})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := portOf(t, ln.Addr())
	ln.Close() // refused until the server starts
	s.add(sbx, nil)

	var once sync.Once
	started := make(chan struct{})
	var srv *http.Server
	s.agent.onProxy = func() {
		once.Do(func() {
			time.AfterFunc(500*time.Millisecond, func() {
				defer close(started)
				ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
				if err != nil {
					t.Errorf("listen again: %v", err)
					return
				}
				srv = &http.Server{Handler: http.HandlerFunc(backendHandler), ReadHeaderTimeout: 5 * time.Second}
				go srv.Serve(ln)
			})
		})
	}
	t.Cleanup(func() {
		<-started
		if srv != nil {
			srv.Close()
		}
	})
	resp, body := do(t, client(), newRequest(t, s, FormPath, sbx, port, "GET", "/small", ""))
	if resp.StatusCode != http.StatusOK || string(body) != "ok" {
		t.Fatalf("GET: %d %s", resp.StatusCode, body)
	}
	if n := s.agent.requests.Load(); n < 2 {
		t.Errorf("agent saw %d requests, want retries", n)
	}

	// A request with a body is never retried: it may have had an effect.
	ln, _ = net.Listen("tcp", "127.0.0.1:0")
	closed := portOf(t, ln.Addr())
	ln.Close()
	before := s.agent.requests.Load()
	resp, _ = do(t, client(), newRequest(t, s, FormPath, sbx, closed, "POST", "/x", "body"))
	if resp.StatusCode != http.StatusBadGateway || s.agent.requests.Load() != before+1 {
		t.Errorf("POST to a closed port: %d after %d agent requests", resp.StatusCode, s.agent.requests.Load()-before)
	}
}

func TestErrors(t *testing.T) {
	s := newStack(t, Config{DialRetry: -1})
	_, port := newBackend(t)
	s.proxy.envdPort = port // this backend plays envd
	_, userPort := newBackend(t)
	s.add(sbx, nil)
	s.add("paused", func(t *Target) { t.Paused = true })
	s.add("private", func(t *Target) { t.PublicTraffic, t.TrafficToken = false, "traffic" })
	s.add("notoken", func(t *Target) { t.PublicTraffic = false })
	down, _ := url.Parse("http://127.0.0.1:1")
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	down.Host = ln.Addr().String()
	ln.Close()
	s.add("hostdown", func(t *Target) { t.AgentURL = down })
	s.res.mu.Lock()
	s.res.targets["broken"] = Target{SandboxID: "broken"}
	s.res.mu.Unlock()

	type hdr = map[string]string
	for _, tc := range []struct {
		name    string
		id      string
		port    int
		headers hdr
		status  int
		message string // checked when set
	}{
		// Not running: 502, as E2B's SDKs expect (see doc.go).
		{"unknown", "nosuch", userPort, nil, 502, "sandbox nosuch was not found"},
		{"paused", "paused", userPort, nil, 502, "sandbox paused is paused"},
		{"unknown envd", "nosuch", port, nil, 502, "sandbox nosuch was not found"},
		{"paused envd", "paused", port, nil, 502, "sandbox paused is paused"},
		{"host down", "hostdown", userPort, nil, 502, ""},
		{"no agent address", "broken", userPort, nil, 502, ""},
		{"private without token", "private", userPort, nil, 403, ""},
		{"private with wrong token", "private", userPort, hdr{wire.HeaderTrafficToken: "nope"}, 403, ""},
		{"private with token", "private", userPort, hdr{wire.HeaderTrafficToken: "traffic"}, 200, ""},
		{"private envd without token", "private", port, nil, 200, ""},
		{"private envd with token", "private", port, hdr{wire.HeaderTrafficToken: "traffic"}, 200, ""},
		{"private without a token set", "notoken", userPort, hdr{wire.HeaderTrafficToken: ""}, 403, ""},
		{"public without token", sbx, userPort, nil, 200, ""},
	} {
		for _, form := range []Form{FormHost, FormHeader, FormPath} {
			req := newRequest(t, s, form, tc.id, tc.port, "GET", "/e", "")
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			resp, body := do(t, client(), req)
			if resp.StatusCode != tc.status {
				t.Errorf("%s (%s): %d %s, want %d", tc.name, form, resp.StatusCode, body, tc.status)
				continue
			}
			if tc.status != 200 {
				var eb errorBody
				if err := json.Unmarshal(body, &eb); err != nil || eb.Code != tc.status || eb.Message == "" {
					t.Errorf("%s (%s): body %s", tc.name, form, body)
				}
				if want := tc.message; want != "" && eb.Message != want {
					t.Errorf("%s (%s): message %q, want %q", tc.name, form, eb.Message, want)
				}
				continue
			}
			var e echo
			_ = json.Unmarshal(body, &e)
			if _, ok := e.Headers[wire.HeaderTrafficToken]; ok {
				t.Errorf("%s (%s): traffic token reached the sandbox", tc.name, form)
			}
		}
	}

	// Not sandbox traffic at all.
	resp, body := do(t, client(), mustRequest(t, "GET", s.srv.URL+"/v2/sandboxes"))
	if resp.StatusCode != 404 || !strings.Contains(string(body), `"code":404`) {
		t.Errorf("unmatched: %d %s", resp.StatusCode, body)
	}
}

// TestAutoResume: a paused sandbox with auto-resume is resumed once however
// many requests arrive, then served; one without it does not run (502); a
// failing resume answers every waiting request 502.
func TestAutoResume(t *testing.T) {
	_, port := newBackend(t)
	var (
		mu        sync.Mutex // guards resumed and resumeErr
		resumed   []string
		resumeErr error
	)
	release := make(chan struct{}) // closed: resumes finish
	var s *stack
	s = newStack(t, Config{AutoResume: func(ctx context.Context, id string) error {
		mu.Lock()
		resumed = append(resumed, id)
		err := resumeErr
		mu.Unlock()
		select {
		case <-release:
		case <-ctx.Done():
			return ctx.Err()
		}
		if err != nil {
			return err
		}
		s.add(id, func(t *Target) { t.AutoResume = true })
		return nil
	}})
	resumes := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), resumed...)
	}
	paused := func(t *Target) { t.Paused, t.AutoResume = true, true }
	s.add("sleepy", paused)
	s.add("manual", func(t *Target) { t.Paused = true })
	s.add("private", func(t *Target) { paused(t); t.PublicTraffic, t.TrafficToken = false, "x" })

	// Many requests, in every form, to one paused sandbox: one resume,
	// and every request served once it is done.
	const n = 24
	type result struct {
		status int
		body   string
	}
	results := make(chan result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			req := newRequest(t, s, []Form{FormHost, FormHeader, FormPath}[i%3], "sleepy", port, "GET", "/small", "")
			resp, err := client().Do(req)
			if err != nil {
				results <- result{0, err.Error()}
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			results <- result{resp.StatusCode, string(b)}
		})
	}
	// Let the requests pile up behind the first resume, then finish it.
	for deadline := time.Now().Add(10 * time.Second); len(resumes()) == 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	close(results)
	for r := range results {
		if r.status != http.StatusOK || r.body != "ok" {
			t.Errorf("request to a resumed sandbox: %d %s", r.status, r.body)
		}
	}
	if got := resumes(); len(got) != 1 || got[0] != "sleepy" {
		t.Fatalf("resumes %v, want one of sleepy", got)
	}
	if !s.proxy.cached("sleepy") {
		t.Error("a resumed sandbox is not cached")
	}

	// Without auto-resume, a paused sandbox does not run: 502, and it is
	// not resumed.
	resp, body := do(t, client(), newRequest(t, s, FormPath, "manual", port, "GET", "/small", ""))
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), `"sandbox manual is paused"`) || len(resumes()) != 1 {
		t.Errorf("paused without auto-resume: %d %s, resumes %v", resp.StatusCode, body, resumes())
	}
	// A private port is checked before resuming: no token, no resume.
	resp, _ = do(t, client(), newRequest(t, s, FormPath, "private", port, "GET", "/small", ""))
	if resp.StatusCode != http.StatusForbidden || len(resumes()) != 1 {
		t.Errorf("private paused: %d, resumes %v", resp.StatusCode, resumes())
	}

	// A failing resume answers 502 with a message to every waiting
	// request, and the next request tries again.
	mu.Lock()
	resumeErr = fmt.Errorf("agent: %w", errdefs.ErrUnavailable)
	mu.Unlock()
	s.add("broken", paused)
	var fwg sync.WaitGroup
	for range 4 {
		fwg.Go(func() {
			resp, body := do(t, client(), newRequest(t, s, FormHeader, "broken", port, "GET", "/small", ""))
			var eb errorBody
			if resp.StatusCode != http.StatusBadGateway || json.Unmarshal(body, &eb) != nil || eb.Code != 502 ||
				!strings.Contains(eb.Message, "resume") {
				t.Errorf("failed resume: %d %s, want 502 with a message", resp.StatusCode, body)
			}
		})
	}
	fwg.Wait()
	before := len(resumes())
	do(t, client(), newRequest(t, s, FormHeader, "broken", port, "GET", "/small", ""))
	if got := len(resumes()); got != before+1 {
		t.Errorf("resumes after failures: %d then %d", before, got)
	}

	// A resume that finds the sandbox gone (killed meanwhile): it does not
	// run, 502 as not found, not a failed resume.
	mu.Lock()
	resumeErr = fmt.Errorf("sandbox vanished: %w", errdefs.ErrNotFound)
	mu.Unlock()
	s.add("vanished", paused)
	resp, body = do(t, client(), newRequest(t, s, FormHost, "vanished", port, "GET", "/small", ""))
	var eb errorBody
	if resp.StatusCode != http.StatusBadGateway || json.Unmarshal(body, &eb) != nil || eb.Code != 502 ||
		eb.Message != "sandbox vanished was not found" {
		t.Errorf("resume of a gone sandbox: %d %s, want 502 not found", resp.StatusCode, body)
	}
}

func mustRequest(t testing.TB, method, u string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func TestUpstreamError(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{&DialError{Addr: "10.0.0.2:80", Err: errors.New("connection refused")}, 502},
		{&DialError{Addr: "10.0.0.2:80", Err: &net.OpError{Op: "dial", Err: timeoutErr{}}}, 502},
		{fmt.Errorf("round trip: %w", context.DeadlineExceeded), 504},
		{&net.OpError{Op: "read", Err: timeoutErr{}}, 504},
		{io.ErrUnexpectedEOF, 502},
	} {
		if got := errdefs.HTTPStatus(UpstreamError(tc.err)); got != tc.want {
			t.Errorf("status of UpstreamError(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

// A refused connection is a *DialError, made by the dialer, whatever the
// transport does with it; the answer marks it for a proxy in front.
func TestDialErrorThroughTransport(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	u := NewUpstream(49983, func(*http.Request) int { return 80 })
	defer u.Close()
	_, err = u.RoundTrip(mustRequest(t, "GET", "http://"+addr+"/"))
	var de *DialError
	if !errors.As(err, &de) || !errors.Is(err, errdefs.ErrUnreachable) {
		t.Fatalf("round trip to a closed port: %v (%T), want a *DialError", err, err)
	}
	rec := httptest.NewRecorder()
	if status := WriteUpstreamError(rec, UpstreamError(err), "nothing answers"); status != http.StatusBadGateway || rec.Code != status {
		t.Errorf("answered %d (returned %d), want 502", rec.Code, status)
	}
	if rec.Header().Get(wire.HeaderProxyError) != wire.ProxyErrorDial {
		t.Errorf("a refused dial is not marked: %v", rec.Header())
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestEvict(t *testing.T) {
	s := newStack(t, Config{})
	_, port := newBackend(t)
	s.add(sbx, nil)
	get := func() int {
		resp, _ := do(t, client(), newRequest(t, s, FormHost, sbx, port, "GET", "/e", ""))
		return resp.StatusCode
	}
	for range 3 {
		if st := get(); st != 200 {
			t.Fatalf("status %d", st)
		}
	}
	if n := s.res.calls.Load(); n != 1 || !s.proxy.cached(sbx) {
		t.Fatalf("resolved %d times, cached %v; want once, cached", n, s.proxy.cached(sbx))
	}
	s.proxy.Evict(sbx)
	if s.proxy.cached(sbx) {
		t.Fatal("still cached after Evict")
	}
	get()
	if n := s.res.calls.Load(); n != 2 {
		t.Fatalf("resolved %d times after Evict, want 2", n)
	}
	// Destroy: the store forgets it, the control plane evicts, and the
	// sandbox does not run: 502.
	s.res.remove(sbx)
	s.proxy.Evict(sbx)
	if st := get(); st != 502 {
		t.Fatalf("after destroy: %d, want 502", st)
	}
	// A dead agent evicts by itself, so the next request resolves afresh.
	s.add("moving", nil)
	if resp, _ := do(t, client(), newRequest(t, s, FormHost, "moving", port, "GET", "/e", "")); resp.StatusCode != 200 {
		t.Fatalf("moving: %d", resp.StatusCode)
	}
	s.agent.Close()
	if resp, _ := do(t, client(), newRequest(t, s, FormHost, "moving", port, "GET", "/e", "")); resp.StatusCode != 502 || s.proxy.cached("moving") {
		t.Fatalf("agent gone: %d, cached %v", resp.StatusCode, s.proxy.cached("moving"))
	}
}

// TestConcurrent runs many requests over several sandboxes while they are
// evicted, for the race detector.
func TestConcurrent(t *testing.T) {
	s := newStack(t, Config{})
	_, port := newBackend(t)
	ids := []string{"s1", "s2", "s3", "s4"}
	for _, id := range ids {
		s.add(id, nil)
	}
	c := client()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 32 {
		wg.Go(func() {
			for i := range 25 {
				id := ids[(g+i)%len(ids)]
				if i%7 == 0 {
					s.proxy.Evict(id)
				}
				form := []Form{FormHost, FormHeader, FormPath}[i%3]
				req := newRequest(t, s, form, id, port, "POST", fmt.Sprintf("/c/%d/%d?i=%d", g, i, i), "x")
				resp, err := c.Do(req)
				if err != nil {
					errs <- err
					return
				}
				var e echo
				err = json.NewDecoder(resp.Body).Decode(&e)
				resp.Body.Close()
				if want := fmt.Sprintf("/c/%d/%d?i=%d", g, i, i); err != nil || resp.StatusCode != 200 || e.URI != want {
					errs <- fmt.Errorf("%s %s: %d %q %v", id, want, resp.StatusCode, e.URI, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestClientGone: a client that left gets no answer written (and no error
// logged above debug).
func TestClientGone(t *testing.T) {
	s := newStack(t, Config{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	t.Cleanup(slow.Close)
	s.add(sbx, nil)
	ctx, cancel := context.WithCancel(context.Background())
	req := httptest.NewRequestWithContext(ctx, "GET", fmt.Sprintf("/proxy/%s/%d/", sbx, portOf(t, slow.Listener.Addr())), nil)
	rec := httptest.NewRecorder()
	s.agent.onProxy = cancel // the client leaves once the agent has the request
	s.proxy.ServeHTTP(rec, req)
	if rec.Body.Len() != 0 || rec.Header().Get("Content-Type") != "" {
		t.Errorf("answered a gone client: %d %q", rec.Code, rec.Body.String())
	}
}

// TestFullDuplex: the request body keeps flowing after the response has
// begun (the client sends its second line only after reading the answer to
// its first). Go's HTTP/1 server would otherwise drain and close the rest
// of the body on the first response write, under the transport copying it
// to the agent; with a body still streaming that deadlocks, and with a
// body's last bytes in flight it cut the response (Connect streams through
// the proxy ended with "unexpected EOF").
func TestFullDuplex(t *testing.T) {
	s := newStack(t, Config{})
	s.add(sbx, nil)
	duplex := httptest.NewServer(http.HandlerFunc(duplexEcho))
	t.Cleanup(duplex.Close)
	port := portOf(t, duplex.Listener.Addr())
	for _, form := range []Form{FormHost, FormHeader, FormPath} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // a deadlock guard, not a measurement
		pr, pw := io.Pipe()
		context.AfterFunc(ctx, func() { pw.CloseWithError(ctx.Err()) }) // unblocks the client's body writer
		req := newRequest(t, s, form, sbx, port, "POST", "/duplex", "")
		req.Body, req.ContentLength, req.GetBody = pr, -1, nil
		done := make(chan error, 1)
		go func() { done <- exchangeLines(pw, req.WithContext(ctx)) }()
		if err := <-done; err != nil {
			t.Errorf("form %v: %v", form, err)
		}
		cancel()
	}
}

// duplexEcho answers each line of the request body as it arrives.
func duplexEcho(w http.ResponseWriter, r *http.Request) {
	_ = http.NewResponseController(w).EnableFullDuplex()
	br := bufio.NewReader(r.Body)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		_, _ = io.WriteString(w, "echo "+line)
		w.(http.Flusher).Flush()
	}
}

// exchangeLines sends "one", waits for its echo, then sends "two".
func exchangeLines(pw *io.PipeWriter, req *http.Request) error {
	go func() { _, _ = io.WriteString(pw, "one\n") }()
	resp, err := client().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || line != "echo one\n" {
		return fmt.Errorf("first echo %q, %v", line, err)
	}
	_, _ = io.WriteString(pw, "two\n")
	pw.Close()
	if rest, err := io.ReadAll(br); err != nil || string(rest) != "echo two\n" {
		return fmt.Errorf("rest %q, %v", rest, err)
	}
	return nil
}

// TestEnvdPool: requests for envd's port and for the sandbox's own ports
// reach the agent on separate connections, each kept alive in its pool.
func TestEnvdPool(t *testing.T) {
	_, envdPort := newBackend(t)
	_, userPort := newBackend(t)
	s := newStack(t, Config{EnvdPort: envdPort})
	s.add(sbx, nil)
	c := client()
	for _, port := range []int{userPort, userPort, envdPort, envdPort, userPort} {
		resp, body := do(t, c, newRequest(t, s, FormHeader, sbx, port, "GET", "/small", ""))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("port %d: %d %s", port, resp.StatusCode, body)
		}
	}
	s.agent.mu.Lock()
	r := s.agent.remotes
	s.agent.mu.Unlock()
	if len(r) != 5 || r[0] != r[1] || r[2] != r[3] || r[4] != r[0] || r[2] == r[0] {
		t.Fatalf("agent saw the proxy from %v: want user, user, envd, envd, user on two kept-alive connections", r)
	}
}

// TestDirect: a target whose agent runs in the proxy's process is reached
// at the address Direct gives, asked on every request, without the agent.
func TestDirect(t *testing.T) {
	s := newStack(t, Config{DialRetry: 5 * time.Second})
	_, port := newBackend(t)
	var asked atomic.Int64
	var gone atomic.Bool
	direct := func(id string) (Instance, error) {
		asked.Add(1)
		if gone.Load() {
			return Instance{}, fmt.Errorf("sandbox %s: %w", id, errdefs.ErrNotFound)
		}
		return Instance{Addr: netip.MustParseAddr("127.0.0.1"), Key: InstanceKey(id, 1)}, nil
	}
	s.res.set(Target{SandboxID: sbx, Direct: direct, PublicTraffic: true})
	c := client()
	for _, form := range []Form{FormHost, FormHeader, FormPath} {
		req := newRequest(t, s, form, sbx, port, "GET", "/a%2Fb?x=1", "")
		resp, body := do(t, c, req)
		var e echo
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &e) != nil || e.URI != "/a%2Fb?x=1" ||
			e.Headers[wire.HeaderAgentToken] != "" || e.Headers["X-Forwarded-For"] == "" {
			t.Fatalf("%v: %d %s", form, resp.StatusCode, body)
		}
	}
	// Redirects under the path form's prefix, as through an agent.
	resp, _ := do(t, c, newRequest(t, s, FormPath, sbx, port, "GET", "/dir", ""))
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusMovedPermanently || loc != "/proxy/"+sbx+"/"+strconv.Itoa(port)+"/dir/" {
		t.Fatalf("redirect %d %q", resp.StatusCode, loc)
	}
	if n := s.agent.requests.Load(); n != 0 {
		t.Fatalf("the agent saw %d requests", n)
	}
	if n := asked.Load(); n != 4 {
		t.Fatalf("Direct asked %d times for 4 requests", n)
	}

	// A port that refuses: retried while its server starts (GET), 502
	// with a message when nothing ever answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	late := portOf(t, ln.Addr())
	ln.Close()
	srvDone := make(chan struct{})
	time.AfterFunc(300*time.Millisecond, func() {
		defer close(srvDone)
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(late))
		if err != nil {
			t.Errorf("listen again: %v", err)
			return
		}
		srv := &http.Server{Handler: http.HandlerFunc(backendHandler), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	})
	resp, body := do(t, c, newRequest(t, s, FormPath, sbx, late, "GET", "/small", ""))
	<-srvDone
	if resp.StatusCode != http.StatusOK || string(body) != "ok" {
		t.Fatalf("GET while the server starts: %d %s", resp.StatusCode, body)
	}
	ln, _ = net.Listen("tcp", "127.0.0.1:0")
	closed := portOf(t, ln.Addr())
	ln.Close()
	resp, body = do(t, c, newRequest(t, s, FormPath, sbx, closed, "POST", "/x", "body"))
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "nothing answers on port") {
		t.Fatalf("POST to a closed port: %d %s", resp.StatusCode, body)
	}

	// Killed while a refused GET is retried: the retries end at once.
	var refusals atomic.Int64
	goneOnRefusal := func(id string) (Instance, error) {
		if refusals.Add(1) > 1 {
			return Instance{}, fmt.Errorf("sandbox %s: %w", id, errdefs.ErrNotFound)
		}
		return Instance{Addr: netip.MustParseAddr("127.0.0.1"), Key: InstanceKey(id, 1)}, nil
	}
	s.res.set(Target{SandboxID: sbx, Direct: goneOnRefusal, PublicTraffic: true})
	resp, _ = do(t, c, newRequest(t, s, FormHeader, sbx, closed, "GET", "/health", ""))
	if resp.StatusCode != http.StatusBadGateway || refusals.Load() != 2 {
		t.Fatalf("GET to a sandbox killed mid-retry: %d after %d lookups; want 502 after 2", resp.StatusCode, refusals.Load())
	}

	// Gone from the agent while still cached: not running (502), and evicted.
	s.res.set(Target{SandboxID: sbx, Direct: direct, PublicTraffic: true})
	gone.Store(true)
	resp, _ = do(t, c, newRequest(t, s, FormHeader, sbx, port, "GET", "/small", ""))
	if resp.StatusCode != http.StatusBadGateway || s.proxy.cached(sbx) {
		t.Fatalf("gone sandbox: %d, cached %v", resp.StatusCode, s.proxy.cached(sbx))
	}

	// Paused on the host before the store says so: not running either.
	pausedOnHost := func(id string) (Instance, error) {
		return Instance{}, fmt.Errorf("sandbox %s: is paused: %w", id, errdefs.ErrConflict)
	}
	s.res.set(Target{SandboxID: sbx, Direct: pausedOnHost, PublicTraffic: true})
	resp, body = do(t, c, newRequest(t, s, FormHeader, sbx, port, "GET", "/health", ""))
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "sandbox "+sbx+" is paused") {
		t.Fatalf("sandbox paused on the host: %d %s", resp.StatusCode, body)
	}
}
