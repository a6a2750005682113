package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/netip"
	"net/textproto"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// countedServer is a sandbox's server that counts the connections made to
// it and those closed.
func countedServer(t *testing.T, h http.HandlerFunc) (addr netip.AddrPort, opened, closed *atomic.Int32) {
	opened, closed = new(atomic.Int32), new(atomic.Int32)
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			opened.Add(1)
		case http.StateClosed, http.StateHijacked:
			closed.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return netip.MustParseAddrPort(srv.Listener.Addr().String()), opened, closed
}

// sandboxRequest is a request straight to path of the sandbox run id at
// addr, as the proxy makes it.
func sandboxRequest(t *testing.T, ctx context.Context, method, id string, addr netip.AddrPort, path string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ToSandbox(ctx, id, addr), method, "http://"+SandboxHost(id, addr)+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return string(b)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Bodiless GETs, HEADs and OPTIONS to a sandbox take the inline round
// trip; a body, another method, an upgrade or an agent do not.
func TestInlineable(t *testing.T) {
	addr := netip.MustParseAddrPort("10.11.0.2:8000")
	for _, tc := range []struct {
		name string
		req  func() *http.Request
		want bool
	}{
		{"GET", func() *http.Request { return sandboxRequest(t, context.Background(), "GET", "sb", addr, "/") }, true},
		{"HEAD", func() *http.Request { return sandboxRequest(t, context.Background(), "HEAD", "sb", addr, "/") }, true},
		{"POST", func() *http.Request { return sandboxRequest(t, context.Background(), "POST", "sb", addr, "/") }, false},
		{"GET with a body", func() *http.Request {
			r := sandboxRequest(t, context.Background(), "GET", "sb", addr, "/")
			r.Body = io.NopCloser(strings.NewReader("x"))
			return r
		}, false},
		{"WebSocket", func() *http.Request {
			r := sandboxRequest(t, context.Background(), "GET", "sb", addr, "/")
			r.Header.Set("Connection", "Upgrade")
			r.Header.Set("Upgrade", "websocket")
			return r
		}, false},
		{"to an agent", func() *http.Request { return mustRequest(t, "GET", "http://10.0.0.1:9000/proxy/sb/8000/") }, false},
	} {
		if got := inlineable(tc.req()); got != tc.want {
			t.Errorf("%s: inlineable %v, want %v", tc.name, got, tc.want)
		}
	}
}

// A connection goes back to the pool at the end of its response's body,
// not when the response closes it, the body is abandoned, or the client
// leaves; an idle one closes after the idle timeout.
func TestInlineReuse(t *testing.T) {
	addr, opened, closed := countedServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/close":
			w.Header().Set("Connection", "close")
		case "/big":
			_, _ = w.Write(make([]byte, 1<<20))
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	u := NewUpstream(49983, func(*http.Request) int { return int(addr.Port()) })
	defer u.Close()
	get := func(path string) *http.Response {
		t.Helper()
		resp, err := u.RoundTrip(sandboxRequest(t, context.Background(), "GET", "sb.1", addr, path))
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		return resp
	}
	for range 3 {
		if body := readAll(t, get("/")); body != "ok" {
			t.Fatalf("body %q", body)
		}
	}
	head, err := u.RoundTrip(sandboxRequest(t, context.Background(), "HEAD", "sb.1", addr, "/"))
	if err != nil || readAll(t, head) != "" {
		t.Fatalf("HEAD: %v", err)
	}
	if n := opened.Load(); n != 1 {
		t.Fatalf("3 GETs and a HEAD made %d connections, want 1", n)
	}
	readAll(t, get("/close"))
	waitFor(t, "the connection the response closed is closed", func() bool { return closed.Load() == 1 })
	resp := get("/big")
	if _, err := resp.Body.Read(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close() // most of it unread
	waitFor(t, "the abandoned body's connection is closed", func() bool { return closed.Load() == 2 })
	readAll(t, get("/"))
	if n := opened.Load(); n != 3 {
		t.Fatalf("%d connections, want 3: one for each response that ended its connection", n)
	}

	u.inline.mu.Lock()
	u.inline.idleTimeout = 20 * time.Millisecond
	u.inline.mu.Unlock()
	readAll(t, get("/")) // idle again, with the short timeout
	waitFor(t, "the idle connection times out", func() bool { return closed.Load() == 3 })
	u.inline.mu.Lock()
	idle := len(u.inline.idle)
	u.inline.mu.Unlock()
	if idle != 0 {
		t.Fatalf("%d hosts with idle connections after the timeout", idle)
	}
}

// A server that closed a kept-alive connection while it was idle (as
// servers do after their idle timeout) does not fail the next request:
// it goes again on a new connection.
func TestInlineServerClosedIdle(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var served atomic.Int32
	closedOne := make(chan struct{}, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				served.Add(1)
				// Kept alive by what it says, closed right after.
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"+req.URL.Path[1:3])
				c.Close()
				closedOne <- struct{}{}
			}()
		}
	}()
	addr := netip.MustParseAddrPort(ln.Addr().String())
	u := NewUpstream(49983, func(*http.Request) int { return int(addr.Port()) })
	defer u.Close()
	for _, path := range []string{"/one", "/two"} {
		resp, err := u.RoundTrip(sandboxRequest(t, context.Background(), "GET", "sb.1", addr, path))
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		if body := readAll(t, resp); body != path[1:3] {
			t.Fatalf("GET %s: body %q", path, body)
		}
		<-closedOne
		time.Sleep(10 * time.Millisecond) // the FIN arrives
	}
	if n := served.Load(); n != 2 {
		t.Fatalf("served %d requests, want 2", n)
	}
}

// The request's context ends a round trip waiting for a header, and one
// reading a body: the server sees its connection go.
func TestInlineContext(t *testing.T) {
	gone := make(chan string, 2)
	addr, _, _ := countedServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			_, _ = io.WriteString(w, "first")
			http.NewResponseController(w).Flush()
		}
		<-r.Context().Done()
		gone <- r.URL.Path
	})
	u := NewUpstream(49983, func(*http.Request) int { return int(addr.Port()) })
	defer u.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := u.RoundTrip(sandboxRequest(t, ctx, "GET", "sb.1", addr, "/poll"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("long poll past its deadline: %v", err)
	}
	if p := <-gone; p != "/poll" {
		t.Fatalf("server saw %s end", p)
	}

	ctx, cancel = context.WithCancel(context.Background())
	resp, err := u.RoundTrip(sandboxRequest(t, ctx, "GET", "sb.1", addr, "/stream"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "first" {
		t.Fatalf("stream: %q %v", buf, err)
	}
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := resp.Body.Read(buf); !errors.Is(err, context.Canceled) {
		t.Fatalf("body read after the request was cancelled: %v", err)
	}
	resp.Body.Close()
	if p := <-gone; p != "/stream" {
		t.Fatalf("server saw %s end", p)
	}
}

// 1xx responses reach httptrace's Got1xxResponse (ReverseProxy forwards
// them), and the final response follows.
func TestInline1xx(t *testing.T) {
	addr, _, _ := countedServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		_, _ = io.WriteString(w, "page")
	})
	u := NewUpstream(49983, func(*http.Request) int { return int(addr.Port()) })
	defer u.Close()
	var hints []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		hints = append(hints, h.Get("Link"))
		return nil
	}}
	ctx := httptrace.WithClientTrace(context.Background(), trace)
	resp, err := u.RoundTrip(sandboxRequest(t, ctx, "GET", "sb.1", addr, "/"))
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, resp); resp.StatusCode != http.StatusOK || body != "page" || len(hints) != 1 || hints[0] != "</style.css>; rel=preload" {
		t.Fatalf("%d %q, 1xx %q", resp.StatusCode, body, hints)
	}
}

// A response header beyond maxResponseHeader fails the round trip (a
// sandbox's server is untrusted); it is not read into memory.
func TestInlineHeaderLimit(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Big: ")
		chunk := strings.Repeat("a", 64<<10)
		for range (maxResponseHeader / len(chunk)) + 2 {
			if _, err := io.WriteString(c, chunk); err != nil {
				return
			}
		}
	}()
	addr := netip.MustParseAddrPort(ln.Addr().String())
	u := NewUpstream(49983, func(*http.Request) int { return int(addr.Port()) })
	defer u.Close()
	_, err = u.RoundTrip(sandboxRequest(t, context.Background(), "GET", "sb.1", addr, "/"))
	if err == nil || !strings.Contains(err.Error(), "response header larger than") {
		t.Fatalf("round trip: %v", err)
	}
}

// A connection whose server sent more than the response (a second,
// unasked-for response) is not used again: that would be the answer to
// the next request.
func TestInlineUnsolicited(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := conns.Add(1)
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					if _, err := http.ReadRequest(br); err != nil {
						return
					}
					answer := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
					if n == 1 {
						answer += "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil"
					}
					if _, err := io.WriteString(c, answer); err != nil {
						return
					}
				}
			}()
		}
	}()
	addr := netip.MustParseAddrPort(ln.Addr().String())
	u := NewUpstream(49983, func(*http.Request) int { return int(addr.Port()) })
	defer u.Close()
	for i := range 2 {
		resp, err := u.RoundTrip(sandboxRequest(t, context.Background(), "GET", "sb.1", addr, "/"))
		if err != nil {
			t.Fatal(err)
		}
		if body := readAll(t, resp); body != "ok" {
			t.Fatalf("request %d got %q", i, body)
		}
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}
}
