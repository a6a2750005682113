package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"roost.dev/roost/errdefs"
	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
	"roost.dev/roost/gen/roost/hostagent/v1/hostagentv1connect"
	"roost.dev/roost/proxy"
	"roost.dev/roost/wire"
)

func TestParseProxyPath(t *testing.T) {
	for _, tc := range []struct {
		in       string
		id       string
		port     uint16
		rest     string
		category error // nil: parses
	}{
		{"/proxy/abc/8080", "abc", 8080, "/", nil},
		{"/proxy/abc/8080/", "abc", 8080, "/", nil},
		{"/proxy/abc/8080/a/b", "abc", 8080, "/a/b", nil},
		{"/proxy/abc/8080/a/b/", "abc", 8080, "/a/b/", nil},
		{"/proxy/abc/8080//double//", "abc", 8080, "//double//", nil},
		{"/proxy/abc/8080/a%2Fb%20c", "abc", 8080, "/a%2Fb%20c", nil},
		{"/proxy/abc/8080/../x", "abc", 8080, "/../x", nil},
		{"/proxy/abc/49983/health", "abc", 49983, "/health", nil},
		{"/proxy/abc/1/", "abc", 1, "/", nil},
		{"/proxy/abc/65535/", "abc", 65535, "/", nil},
		{"/proxy/abc/0/", "", 0, "", errdefs.ErrInvalid},
		{"/proxy/abc/65536/", "", 0, "", errdefs.ErrInvalid},
		{"/proxy/abc/080/", "", 0, "", errdefs.ErrInvalid},
		{"/proxy/abc/+80/", "", 0, "", errdefs.ErrInvalid},
		{"/proxy/abc/http/", "", 0, "", errdefs.ErrInvalid},
		{"/proxy/abc", "", 0, "", errdefs.ErrInvalid},
		{"/proxy/abc/", "", 0, "", errdefs.ErrInvalid},
		{"/proxy/ABC/80/", "", 0, "", errdefs.ErrNotFound},
		{"/proxy//80/", "", 0, "", errdefs.ErrNotFound},
		{"/proxy/a%2Fb/80/", "", 0, "", errdefs.ErrNotFound},
		{"/other/abc/80/", "", 0, "", errdefs.ErrNotFound},
	} {
		id, port, rest, err := parseProxyPath(tc.in)
		if tc.category != nil {
			if !errors.Is(err, tc.category) {
				t.Errorf("%s: err = %v, want %v", tc.in, err, tc.category)
			}
			continue
		}
		if err != nil || id != tc.id || port != tc.port || rest != tc.rest {
			t.Errorf("%s: got (%q, %d, %q, %v), want (%q, %d, %q)", tc.in, id, port, rest, err, tc.id, tc.port, tc.rest)
		}
	}
}

func FuzzParseProxyPath(f *testing.F) {
	for _, s := range []string{"/proxy/abc/80/", "/proxy/abc/80", "/proxy/a/1/x%2F/?", "/proxy//0//", "/proxy/abc/65536"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		id, port, rest, err := parseProxyPath(in)
		if err != nil {
			return
		}
		if !validID(id) || port == 0 || !strings.HasPrefix(rest, "/") {
			t.Fatalf("%q parsed to (%q, %d, %q)", in, id, port, rest)
		}
		// Nothing is lost: the parts make the path again.
		prefix := wire.ProxyPrefix + id + "/" + strconv.Itoa(int(port))
		if in != prefix+rest && !(rest == "/" && in == prefix) {
			t.Fatalf("%q parsed to (%q, %d, %q), which does not rebuild it", in, id, port, rest)
		}
	})
}

// mapResolver is the edge the proxy is tested at: sandboxes by ID.
type mapResolver map[string]error

func (r mapResolver) proxyTarget(id string) (proxy.Instance, error) {
	err, ok := r[id]
	if !ok {
		return proxy.Instance{}, fmt.Errorf("sandbox %s: %w", id, errdefs.ErrNotFound)
	}
	return proxy.Instance{Addr: netip.MustParseAddr("127.0.0.1"), Key: id}, err
}

var testResolver = mapResolver{
	"sb1":      nil,
	"paused":   fmt.Errorf("sandbox paused: %w", ErrPaused),
	"starting": fmt.Errorf("sandbox starting is starting: %w", errdefs.ErrUnavailable),
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startAgentHTTP serves the agent's HTTP surface (proxy, RPC with no
// manager behind it, auth) on loopback.
func startAgentHTTP(t *testing.T, token string) *httptest.Server {
	t.Helper()
	s := newServer(hostagentv1connect.UnimplementedHostAgentServiceHandler{}, testResolver, ServerConfig{Token: token}, testLogger(t))
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		srv.Close()
		s.proxy.close()
	})
	return srv
}

// backendPort starts a sandbox-side server on loopback and returns its port.
func backendPort(t *testing.T, h http.Handler) int {
	t.Helper()
	b := httptest.NewServer(h)
	t.Cleanup(b.Close)
	return b.Listener.Addr().(*net.TCPAddr).Port
}

// seen is what the backend reports about a request it got.
type seen struct {
	Method, Path, RawPath, EscapedPath, Query, Host, Body string
	Authorization, XFF, XFHost, XFProto                   string
}

func echoBackend() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(seen{
			Method: r.Method, Path: r.URL.Path, RawPath: r.URL.RawPath, EscapedPath: r.URL.EscapedPath(),
			Query: r.URL.RawQuery, Host: r.Host, Body: string(body), Authorization: r.Header.Get("Authorization"),
			XFF: r.Header.Get("X-Forwarded-For"), XFHost: r.Header.Get("X-Forwarded-Host"), XFProto: r.Header.Get("X-Forwarded-Proto"),
		})
	})
}

func do(t *testing.T, method, url string, header http.Header, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func TestProxyRewrite(t *testing.T) {
	agentSrv := startAgentHTTP(t, "")
	port := backendPort(t, echoBackend())
	base := fmt.Sprintf("%s/proxy/sb1/%d", agentSrv.URL, port)
	agentHost := strings.TrimPrefix(agentSrv.URL, "http://")
	for _, tc := range []struct {
		name, method, url string
		header            http.Header
		body              string
		want              seen
	}{
		{name: "no trailing slash is the root", method: "GET", url: base,
			want: seen{Method: "GET", Path: "/", EscapedPath: "/"}},
		{name: "root", method: "GET", url: base + "/",
			want: seen{Method: "GET", Path: "/", EscapedPath: "/"}},
		{name: "trailing slash kept", method: "GET", url: base + "/dir/sub/",
			want: seen{Method: "GET", Path: "/dir/sub/", EscapedPath: "/dir/sub/"}},
		{name: "no trailing slash added", method: "GET", url: base + "/dir/file",
			want: seen{Method: "GET", Path: "/dir/file", EscapedPath: "/dir/file"}},
		{name: "query kept byte for byte", method: "GET", url: base + "/q?b=2&a=1&x=%20y&empty=",
			want: seen{Method: "GET", Path: "/q", EscapedPath: "/q", Query: "b=2&a=1&x=%20y&empty="}},
		{name: "escaping kept", method: "GET", url: base + "/files/a%2Fb%3F.txt",
			want: seen{Method: "GET", Path: "/files/a/b?.txt", RawPath: "/files/a%2Fb%3F.txt", EscapedPath: "/files/a%2Fb%3F.txt"}},
		{name: "double slashes kept", method: "GET", url: base + "//x//",
			want: seen{Method: "GET", Path: "//x//", EscapedPath: "//x//"}},
		{name: "body and method", method: "POST", url: base + "/upload", body: "hello sandbox",
			want: seen{Method: "POST", Path: "/upload", EscapedPath: "/upload", Body: "hello sandbox"}},
		{name: "forwarded chain kept", method: "GET", url: base + "/",
			header: http.Header{"X-Forwarded-For": {"203.0.113.7"}, "X-Forwarded-Host": {"8080-sb1.example.com"}, "X-Forwarded-Proto": {"https"}},
			want:   seen{Method: "GET", Path: "/", EscapedPath: "/", XFF: "203.0.113.7, 127.0.0.1", XFHost: "8080-sb1.example.com", XFProto: "https"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := do(t, tc.method, tc.url, tc.header, tc.body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
			var got seen
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			want := tc.want
			want.Host = agentHost // the Host header passes through
			if want.XFF == "" {
				want.XFF, want.XFHost, want.XFProto = "127.0.0.1", agentHost, "http"
			}
			if got != want {
				t.Errorf("backend saw\n %+v\nwant\n %+v", got, want)
			}
		})
	}
}

func TestProxyRedirectNotRewritten(t *testing.T) {
	agentSrv := startAgentHTTP(t, "")
	port := backendPort(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/dir/", http.StatusMovedPermanently)
	}))
	resp, _ := do(t, "GET", fmt.Sprintf("%s/proxy/sb1/%d/dir", agentSrv.URL, port), nil, "")
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/dir/" {
		t.Errorf("got %d Location %q; the agent leaves redirects to the control plane", resp.StatusCode, resp.Header.Get("Location"))
	}
}

func TestProxyErrors(t *testing.T) {
	agentSrv := startAgentHTTP(t, "")
	port := backendPort(t, echoBackend())
	// A port nothing listens on: take one and close it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	for _, tc := range []struct {
		name, path string
		status     int
	}{
		{"unknown sandbox", fmt.Sprintf("/proxy/nosuch/%d/", port), http.StatusBadGateway},
		{"invalid id", fmt.Sprintf("/proxy/NO_SUCH/%d/", port), http.StatusNotFound},
		{"paused", fmt.Sprintf("/proxy/paused/%d/", port), http.StatusBadGateway},
		{"starting", fmt.Sprintf("/proxy/starting/%d/", port), http.StatusServiceUnavailable},
		{"bad port", "/proxy/sb1/99999/", http.StatusBadRequest},
		{"no port", "/proxy/sb1", http.StatusBadRequest},
		{"nothing listening", fmt.Sprintf("/proxy/sb1/%d/", closed), http.StatusBadGateway},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := do(t, "GET", agentSrv.URL+tc.path, nil, "")
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, b)
			}
			var body struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}
			if err := json.Unmarshal(b, &body); err != nil || body.Code != tc.status || body.Message == "" {
				t.Errorf("body %s: want JSON {code: %d, message}", b, tc.status)
			}
			// Only a refused connection is marked retryable for the
			// control plane's proxy.
			if got, want := resp.Header.Get(wire.HeaderProxyError), map[bool]string{true: wire.ProxyErrorDial}[tc.name == "nothing listening"]; got != want {
				t.Errorf("%s: %q, want %q", wire.HeaderProxyError, got, want)
			}
		})
	}
}

func TestProxyStreams(t *testing.T) {
	agentSrv := startAgentHTTP(t, "")
	next := make(chan struct{})
	port := backendPort(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-next:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "data: two\n\n")
	}))
	resp, err := http.Get(fmt.Sprintf("%s/proxy/sb1/%d/events", agentSrv.URL, port))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	// The first event arrives while the server still holds the second:
	// nothing buffers the stream.
	if line, err := r.ReadString('\n'); err != nil || line != "data: one\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	close(next)
	rest, _ := io.ReadAll(r)
	if string(rest) != "\ndata: two\n\n" {
		t.Errorf("rest %q", rest)
	}
}

func TestProxyWebSocket(t *testing.T) {
	agentSrv := startAgentHTTP(t, "")
	// A minimal upgrade server: after 101 it echoes bytes, which is all
	// the proxy can see of WebSocket frames.
	port := backendPort(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" || r.URL.Path != "/ws/" {
			http.Error(w, "want an upgrade to /ws/", http.StatusBadRequest)
			return
		}
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		rw.Flush()
		io.Copy(conn, rw)
	}))
	conn, err := net.Dial("tcp", strings.TrimPrefix(agentSrv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /proxy/sb1/%d/ws/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", port)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", resp.StatusCode)
	}
	for _, msg := range []string{"ping", "a longer message\x00with bytes\xff"} {
		if _, err := io.WriteString(conn, msg); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo %q, %v; want %q", buf, err, msg)
		}
	}
}

func TestAuth(t *testing.T) {
	const token = "s3cret"
	agentSrv := startAgentHTTP(t, token)
	port := backendPort(t, echoBackend())
	proxied := fmt.Sprintf("%s/proxy/sb1/%d/", agentSrv.URL, port)

	t.Run("health needs no token", func(t *testing.T) {
		if resp, _ := do(t, "GET", agentSrv.URL+"/health", nil, ""); resp.StatusCode != http.StatusNoContent {
			t.Errorf("status %d", resp.StatusCode)
		}
	})
	t.Run("proxy", func(t *testing.T) {
		for _, tc := range []struct {
			name    string
			header  http.Header
			status  int
			sandbox string // the Authorization header the sandbox sees
		}{
			{"no token", nil, http.StatusUnauthorized, ""},
			{"wrong token", http.Header{"Authorization": {"Bearer nope"}}, http.StatusUnauthorized, ""},
			{"not bearer", http.Header{"Authorization": {"Basic " + token}}, http.StatusUnauthorized, ""},
			{"bearer, stripped", http.Header{"Authorization": {"Bearer " + token}}, http.StatusOK, ""},
			{"own header keeps the client's Authorization",
				http.Header{wire.HeaderAgentToken: {token}, "Authorization": {"Basic dXNlcjpwdw=="}}, http.StatusOK, "Basic dXNlcjpwdw=="},
			{"wrong own header", http.Header{wire.HeaderAgentToken: {"nope"}, "Authorization": {"Bearer " + token}}, http.StatusUnauthorized, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				resp, b := do(t, "GET", proxied, tc.header, "")
				if resp.StatusCode != tc.status {
					t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, b)
				}
				if tc.status != http.StatusOK {
					return
				}
				var got seen
				if err := json.Unmarshal(b, &got); err != nil {
					t.Fatal(err)
				}
				if got.Authorization != tc.sandbox {
					t.Errorf("sandbox saw Authorization %q, want %q", got.Authorization, tc.sandbox)
				}
			})
		}
	})
	t.Run("rpc", func(t *testing.T) {
		ctx := context.Background()
		noToken := hostagentv1connect.NewHostAgentServiceClient(http.DefaultClient, agentSrv.URL)
		_, err := noToken.GetHostInfo(ctx, connect.NewRequest(&hostagentv1.GetHostInfoRequest{}))
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Errorf("without token: %v, want unauthenticated", err)
		}
		withToken := hostagentv1connect.NewHostAgentServiceClient(http.DefaultClient, agentSrv.URL,
			connect.WithInterceptors(bearer(token)))
		_, err = withToken.GetHostInfo(ctx, connect.NewRequest(&hostagentv1.GetHostInfoRequest{}))
		// Past auth, the test server has no manager behind it.
		if connect.CodeOf(err) != connect.CodeUnimplemented {
			t.Errorf("with token: %v, want to pass auth (unimplemented)", err)
		}
	})
}

// bearer adds the agent token to every call.
func bearer(token string) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+token)
			return next(ctx, req)
		}
	}
}

// TestProxyFullDuplex: a request body that keeps streaming after the
// response has begun reaches the sandbox's server (the client sends its
// second line only after reading the answer to its first). Go's HTTP/1
// server would otherwise drain and close the rest of the body on the first
// response write, under the transport copying it to the sandbox.
func TestProxyFullDuplex(t *testing.T) {
	agentSrv := startAgentHTTP(t, "")
	port := backendPort(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second) // a deadlock guard, not a measurement
	defer cancel()
	pr, pw := io.Pipe()
	context.AfterFunc(ctx, func() { pw.CloseWithError(ctx.Err()) }) // unblocks the client's body writer
	req, err := http.NewRequestWithContext(ctx, "POST", fmt.Sprintf("%s/proxy/sb1/%d/duplex", agentSrv.URL, port), pr)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = io.WriteString(pw, "one\n") }()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || line != "echo one\n" {
		t.Fatalf("first echo %q, %v", line, err)
	}
	_, _ = io.WriteString(pw, "two\n")
	pw.Close()
	if rest, err := io.ReadAll(br); err != nil || string(rest) != "echo two\n" {
		t.Fatalf("rest %q, %v", rest, err)
	}
}
