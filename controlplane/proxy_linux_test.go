package controlplane_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"roost.dev/roost/controlplane"
	"roost.dev/roost/errdefs"
	"roost.dev/roost/store/storetest"
)

// wsEcho is a WebSocket echo server on port 8001 in python3's standard
// library alone (the sandbox has no internet to install one): it answers
// the handshake, then echoes text and binary frames, answers pings and
// echoes the close.
const wsEcho = `import base64, hashlib, socket, struct, threading

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

def exact(c, n):
    b = b""
    while len(b) < n:
        d = c.recv(n - len(b))
        if not d:
            raise EOFError
        b += d
    return b

def frame(op, data):
    n = len(data)
    if n < 126:
        head = bytes([0x80 | op, n])
    elif n < 65536:
        head = bytes([0x80 | op, 126]) + struct.pack("!H", n)
    else:
        head = bytes([0x80 | op, 127]) + struct.pack("!Q", n)
    return head + data

def serve(c):
    try:
        req = b""
        while b"\r\n\r\n" not in req:
            d = c.recv(4096)
            if not d:
                return
            req += d
        key = b""
        for line in req.split(b"\r\n"):
            if line.lower().startswith(b"sec-websocket-key:"):
                key = line.split(b":", 1)[1].strip()
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        while True:
            h = exact(c, 2)
            op, n = h[0] & 0x0F, h[1] & 0x7F
            if n == 126:
                n = struct.unpack("!H", exact(c, 2))[0]
            elif n == 127:
                n = struct.unpack("!Q", exact(c, 8))[0]
            mask = exact(c, 4) if h[1] & 0x80 else b"\0\0\0\0"
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(exact(c, n)))
            if op == 8:
                c.sendall(frame(8, data[:2]))
                return
            c.sendall(frame(10 if op == 9 else op, data))
    except (EOFError, OSError):
        pass
    finally:
        c.close()

s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8001))
s.listen(16)
while True:
    conn, _ = s.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
`

// proxyTimeout bounds every request through the proxy: an answer must
// come, whatever it is.
const proxyTimeout = time.Minute

// via sends a GET through the control plane's listener. host, when set,
// is the request's Host; hdr is pairs of header name and value.
func (e *testenv) via(t *testing.T, c *http.Client, path, host string, hdr ...string) response {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), proxyTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s (Host %q): no answer: %v", path, host, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// serveDir starts python3 -m http.server on port 8000 in the sandbox, over
// a directory with a file and a subdirectory, and waits until the proxy
// reaches it. hdr goes with every request (a traffic token).
func (e *testenv) serveDir(t *testing.T, id string, hdr ...string) {
	t.Helper()
	e.exec(t, id, map[string]any{"cmd": "mkdir -p /tmp/www/sub && echo hello > /tmp/www/hello.txt && " +
		"echo inner > /tmp/www/sub/inner.txt && cd /tmp/www && " +
		"nohup python3 -m http.server 8000 </dev/null >/dev/null 2>&1 &"})
	e.waitServed(t, "/proxy/"+id+"/8000/hello.txt", hdr...)
}

// waitServed polls path through the proxy until it answers 200.
func (e *testenv) waitServed(t *testing.T, path string, hdr ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := e.via(t, nil, path, "", hdr...)
		if r.status == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never served: %d %s", path, r.status, r.body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestProxy sends traffic through the control plane's listener to servers
// in a real sandbox.
func TestProxy(t *testing.T) {
	// Through the agent's HTTP proxy, as for any remote host, and
	// straight to the sandbox, as roost up does for its own agent.
	t.Run("agent", func(t *testing.T) { testProxy(t, newTestenv(t, controlplane.Config{})) })
	t.Run("local", func(t *testing.T) { testProxy(t, newTestenv(t, controlplane.Config{Local: localAgent()})) })
}

// quietServerDelay is how long after its last request a sandbox starts
// a loopback-only server in TestProxyFindsServerAfterQuiet. envd's idle
// scans come at 10 s of quiet and then every eighth of the quiet time
// (about 41.1, 46.2 and 52.0 s): starting just after one, and asked
// 1.5 s later, the server would not be seen within the proxy's 3 s of
// retries without the proxy's kick.
const quietServerDelay = 47 * time.Second

// A loopback-only server that starts listening long after anyone used
// its sandbox is reached by its first proxied request, at once: the
// proxy's refused dial asks envd to look for it before the retry,
// through the agent's proxy and straight to the sandbox.
func TestProxyFindsServerAfterQuiet(t *testing.T) {
	if testing.Short() {
		t.Skip("waits 48 s for a sandbox to go quiet")
	}
	for name, cfg := range map[string]controlplane.Config{"agent": {}, "local": {Local: localAgent()}} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newTestenv(t, cfg)
			id := e.create(t, map[string]any{"timeout": 600}).SandboxID
			delay := int(quietServerDelay / time.Second)
			e.exec(t, id, map[string]any{"cmd": fmt.Sprintf("(sleep %d; exec python3 -m http.server 8123 --bind 127.0.0.1) </dev/null >/dev/null 2>&1 &", delay)})
			time.Sleep(quietServerDelay + 1500*time.Millisecond)
			begin := time.Now()
			r := e.via(t, nil, "/proxy/"+id+"/8123/", "")
			if took := time.Since(begin); r.status != http.StatusOK || took > time.Second {
				t.Errorf("first request to a server started after %v of quiet: %d after %v, want 200 within 1s", quietServerDelay, r.status, took)
			}
		})
	}
}

func testProxy(t *testing.T, e *testenv) {
	c := e.create(t, map[string]any{"timeout": 600})
	id := c.SandboxID
	t.Cleanup(func() { e.do("DELETE", "/sandboxes/"+id, e.key, nil) })
	e.serveDir(t, id)

	t.Run("Forms", func(t *testing.T) {
		for _, tc := range []struct {
			name, path, host string
			hdr              []string
		}{
			{"host", "/hello.txt", "8000-" + id + ".localhost", nil},
			{"host with port", "/hello.txt", "8000-" + id + ".localhost:" + strings.Split(e.url, ":")[2], nil},
			{"headers", "/hello.txt", "", []string{"E2b-Sandbox-Id", id, "E2b-Sandbox-Port", "8000"}},
			{"path", "/proxy/" + id + "/8000/hello.txt", "", nil},
			{"path, nested", "/proxy/" + id + "/8000/sub/inner.txt", "", nil},
		} {
			r := e.via(t, nil, tc.path, tc.host, tc.hdr...)
			want := "hello\n"
			if strings.HasSuffix(tc.path, "inner.txt") {
				want = "inner\n"
			}
			if r.status != http.StatusOK || string(r.body) != want {
				t.Errorf("%s: %d %q, want 200 %q", tc.name, r.status, r.body, want)
			}
		}
	})

	t.Run("DirectoryRedirect", func(t *testing.T) {
		hops := 0
		c := &http.Client{CheckRedirect: func(req *http.Request, via []*http.Request) error {
			hops = len(via)
			if len(via) > 3 {
				return fmt.Errorf("more than 3 redirects, the last to %s", req.URL)
			}
			return nil
		}}
		ctx, cancel := context.WithTimeout(t.Context(), proxyTimeout)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.url+"/proxy/"+id+"/8000/sub", nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if want := "/proxy/" + id + "/8000/sub/"; resp.Request.URL.Path != want {
			t.Fatalf("landed on %s after %d redirects, want %s", resp.Request.URL, hops, want)
		}
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `href="inner.txt"`) {
			t.Fatalf("listing: %d %s", resp.StatusCode, body)
		}
		// The bare prefix gets its slash and lands on the root listing.
		req, _ = http.NewRequestWithContext(ctx, http.MethodGet, e.url+"/proxy/"+id+"/8000", nil)
		if resp, err = c.Do(req); err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.Request.URL.Path != "/proxy/"+id+"/8000/" || !strings.Contains(string(body), `href="sub/"`) {
			t.Fatalf("bare prefix landed on %s: %d %s", resp.Request.URL, resp.StatusCode, body)
		}
	})

	t.Run("WebSocket", func(t *testing.T) {
		e.raw(t, "PUT", "/v1/sandboxes/"+id+"/files?path=/tmp/ws.py", e.key, strings.NewReader(wsEcho)).want(t, http.StatusOK)
		e.exec(t, id, map[string]any{"cmd": "nohup python3 /tmp/ws.py </dev/null >/tmp/ws.log 2>&1 &"})
		ctx, cancel := context.WithTimeout(t.Context(), proxyTimeout)
		defer cancel()
		u := "ws" + strings.TrimPrefix(e.url, "http") + "/proxy/" + id + "/8001/echo"
		var conn *websocket.Conn
		for deadline := time.Now().Add(30 * time.Second); ; {
			var err error
			conn, _, err = websocket.Dial(ctx, u, &websocket.DialOptions{CompressionMode: websocket.CompressionDisabled})
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				log := e.exec(t, id, map[string]any{"cmd": "cat /tmp/ws.log"})
				t.Fatalf("dial %s: %v; server log: %s", u, err, log.Stdout)
			}
			time.Sleep(100 * time.Millisecond)
		}
		defer conn.CloseNow()
		conn.SetReadLimit(1 << 20)
		for i, msg := range []string{"one", "two", strings.Repeat("x", 70000), "ünïcödé", ""} {
			typ := websocket.MessageText
			if i%2 == 1 {
				typ = websocket.MessageBinary
			}
			if err := conn.Write(ctx, typ, []byte(msg)); err != nil {
				t.Fatalf("write %d: %v", i, err)
			}
			gotTyp, got, err := conn.Read(ctx)
			if err != nil {
				t.Fatalf("read %d: %v", i, err)
			}
			if gotTyp != typ || string(got) != msg {
				t.Fatalf("message %d: got %v of %d bytes, want %v of %d", i, gotTyp, len(got), typ, len(msg))
			}
		}
		if err := conn.Close(websocket.StatusNormalClosure, "done"); err != nil {
			t.Fatalf("close: %v", err)
		}
	})

	t.Run("PrivateTraffic", func(t *testing.T) {
		p := e.create(t, map[string]any{"network": map[string]any{"allowPublicTraffic": false}})
		t.Cleanup(func() { e.do("DELETE", "/sandboxes/"+p.SandboxID, e.key, nil) })
		if p.TrafficAccessToken == "" {
			t.Fatalf("create response has no traffic token: %+v", p)
		}
		tok := []string{"E2b-Traffic-Access-Token", p.TrafficAccessToken}
		e.serveDir(t, p.SandboxID, tok...)
		path := "/proxy/" + p.SandboxID + "/8000/hello.txt"
		e.via(t, nil, path, "").want(t, http.StatusForbidden)
		e.via(t, nil, path, "", "E2b-Traffic-Access-Token", "wrong").want(t, http.StatusForbidden)
		e.via(t, nil, path, "", "E2b-Traffic-Access-Token", c.TrafficAccessToken).want(t, http.StatusForbidden)
		e.via(t, nil, "/hello.txt", "8000-"+p.SandboxID+".localhost").want(t, http.StatusForbidden)
		if r := e.via(t, nil, path, "", tok...).want(t, http.StatusOK); string(r.body) != "hello\n" {
			t.Fatalf("with the token: %q", r.body)
		}
		if r := e.via(t, nil, "/hello.txt", "8000-"+p.SandboxID+".localhost", tok...).want(t, http.StatusOK); string(r.body) != "hello\n" {
			t.Fatalf("with the token, Host form: %q", r.body)
		}
		// envd checks its own token; the traffic token is not needed.
		e.via(t, nil, "/proxy/"+p.SandboxID+"/49983/health", "").want(t, http.StatusNoContent)
	})

	t.Run("Deleted", func(t *testing.T) {
		d := e.create(t, nil)
		e.serveDir(t, d.SandboxID) // the proxy now caches it
		e.do("DELETE", "/sandboxes/"+d.SandboxID, e.key, nil).want(t, http.StatusNoContent)
		for _, r := range []response{
			e.via(t, nil, "/proxy/"+d.SandboxID+"/8000/hello.txt", ""),
			e.via(t, nil, "/hello.txt", "8000-"+d.SandboxID+".localhost"),
			e.via(t, nil, "/hello.txt", "", "E2b-Sandbox-Id", d.SandboxID, "E2b-Sandbox-Port", "8000"),
		} {
			// Not running: 502, as E2B's SDKs expect (proxy/doc.go).
			r.want(t, http.StatusBadGateway).wantMessage(t, "sandbox "+d.SandboxID+" was not found")
		}
	})
}

// TestProxyAutoResume: traffic to a paused sandbox created with autoResume
// resumes it and is served; without autoResume it does not run (502). The flag is
// stored, so it runs on every database.
func TestProxyAutoResume(t *testing.T) {
	storetest.Run(t, func(t *testing.T, dbURL string) {
		testProxyAutoResume(t, newTestenvDB(t, controlplane.Config{}, dbURL))
	})
}

func testProxyAutoResume(t *testing.T, e *testenv) {
	e.do("POST", "/v2/sandboxes", e.key, map[string]any{"autoResume": map[string]any{"enabled": true}}).
		want(t, http.StatusBadRequest)

	c := e.create(t, map[string]any{"timeout": 300, "autoPause": true, "autoResume": map[string]any{"enabled": true}})
	id := c.SandboxID
	t.Cleanup(func() { e.do("DELETE", "/sandboxes/"+id, e.key, nil) })
	manual := e.create(t, map[string]any{"timeout": 300, "autoPause": true}).SandboxID
	t.Cleanup(func() { e.do("DELETE", "/sandboxes/"+manual, e.key, nil) })

	type lifecycle struct {
		OnTimeout  string `json:"onTimeout"`
		AutoResume bool   `json:"autoResume"`
	}
	var detail struct {
		Lifecycle *lifecycle `json:"lifecycle"`
	}
	e.do("GET", "/sandboxes/"+id, e.key, nil).want(t, http.StatusOK).decode(t, &detail)
	if detail.Lifecycle == nil || *detail.Lifecycle != (lifecycle{"pause", true}) {
		t.Fatalf("lifecycle %+v, want pause with auto-resume", detail.Lifecycle)
	}
	var list []struct {
		SandboxID string     `json:"sandboxID"`
		Lifecycle *lifecycle `json:"lifecycle"`
	}
	e.do("GET", "/v2/sandboxes", e.key, nil).want(t, http.StatusOK).decode(t, &list)
	for _, l := range list {
		want := lifecycle{"pause", l.SandboxID == id}
		if l.Lifecycle == nil || *l.Lifecycle != want {
			t.Errorf("listed %s: lifecycle %+v, want %+v", l.SandboxID, l.Lifecycle, want)
		}
	}

	e.serveDir(t, id)
	e.serveDir(t, manual)
	for _, sb := range []string{id, manual} {
		e.do("POST", "/sandboxes/"+sb+"/pause", e.key, nil).want(t, http.StatusNoContent)
		e.waitState(t, sb, "paused")
	}

	// Without autoResume: not running (502), and it stays paused.
	e.via(t, nil, "/proxy/"+manual+"/8000/hello.txt", "").want(t, http.StatusBadGateway).wantMessage(t, "sandbox "+manual+" is paused")
	e.via(t, nil, "/health", "49983-"+manual+".localhost").want(t, http.StatusBadGateway).wantMessage(t, "is paused")
	if l := e.get(t, manual); l.State != "paused" {
		t.Fatalf("a sandbox without auto-resume is %q after traffic", l.State)
	}

	// With it: the request resumes the sandbox and is served by the
	// server that was running when it paused.
	if r := e.via(t, nil, "/hello.txt", "8000-"+id+".localhost").want(t, http.StatusOK); string(r.body) != "hello\n" {
		t.Fatalf("auto-resumed answer %q", r.body)
	}
	l := e.get(t, id)
	if l.State != "running" || !l.EndAt.After(time.Now().Add(200*time.Second)) {
		t.Fatalf("after auto-resume: state %q, endAt %s", l.State, l.EndAt)
	}
	e.via(t, nil, "/proxy/"+id+"/8000/sub/inner.txt", "").want(t, http.StatusOK)

	// Paused again, then deleted: the proxy answers not found (502), not
	// a resume.
	e.do("POST", "/sandboxes/"+id+"/pause", e.key, nil).want(t, http.StatusNoContent)
	e.do("DELETE", "/sandboxes/"+id, e.key, nil).want(t, http.StatusNoContent)
	e.via(t, nil, "/proxy/"+id+"/8000/hello.txt", "").want(t, http.StatusBadGateway).wantMessage(t, "sandbox "+id+" was not found")
	if _, err := e.agent.Get(id); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("agent still has %s: %v", id, err)
	}
}
