package controlplane_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"roost.dev/roost/controlplane"
)

// wsConn is a client of the /v1 WebSocket endpoints.
type wsConn struct {
	t   testing.TB
	c   *websocket.Conn
	ctx context.Context
	out bytes.Buffer // channel 1
	err bytes.Buffer // channel 2
}

type wsMsg struct {
	Type     string `json:"type"`
	PID      uint32 `json:"pid"`
	ExitCode *int32 `json:"exitCode"`
	Status   string `json:"status"`
	Error    string `json:"error"`
	TimedOut bool   `json:"timedOut"`
}

// dialWS opens path on the control plane; a refused upgrade returns its
// HTTP status.
func (e *testenv) dialWS(t testing.TB, path, key string) (*wsConn, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a hang guard, not a measurement
	t.Cleanup(cancel)
	h := http.Header{}
	if key != "" {
		h.Set("X-API-Key", key)
	}
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.url, "http")+path, &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		if resp != nil {
			return nil, resp.StatusCode
		}
		t.Fatalf("dial %s: %v", path, err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return &wsConn{t: t, c: c, ctx: ctx}, http.StatusSwitchingProtocols
}

func (w *wsConn) sendJSON(v any) {
	w.t.Helper()
	b, _ := json.Marshal(v)
	if err := w.c.Write(w.ctx, websocket.MessageText, b); err != nil {
		w.t.Fatal(err)
	}
}

func (w *wsConn) sendInput(s string) {
	w.t.Helper()
	if err := w.c.Write(w.ctx, websocket.MessageBinary, append([]byte{0}, s...)); err != nil {
		w.t.Fatal(err)
	}
}

// next reads frames, collecting output, until a text message.
func (w *wsConn) next() (wsMsg, error) {
	for {
		typ, b, err := w.c.Read(w.ctx)
		if err != nil {
			return wsMsg{}, err
		}
		if typ == websocket.MessageBinary {
			if len(b) == 0 {
				w.t.Fatal("empty binary frame")
			}
			switch b[0] {
			case 1:
				w.out.Write(b[1:])
			case 2:
				w.err.Write(b[1:])
			default:
				w.t.Fatalf("frame on channel %d", b[0])
			}
			continue
		}
		var m wsMsg
		if err := json.Unmarshal(b, &m); err != nil {
			w.t.Fatalf("text frame %q: %v", b, err)
		}
		return m, nil
	}
}

func (w *wsConn) want(typ string) wsMsg {
	w.t.Helper()
	m, err := w.next()
	if err != nil {
		w.t.Fatalf("waiting for %s: %v (output so far %q)", typ, err, w.out.String())
	}
	if m.Type != typ {
		w.t.Fatalf("got %+v, want %s", m, typ)
	}
	return m
}

// waitOutput reads until stdout holds s.
func (w *wsConn) waitOutput(s string) {
	w.t.Helper()
	for !strings.Contains(w.out.String(), s) {
		typ, b, err := w.c.Read(w.ctx)
		if err != nil {
			w.t.Fatalf("waiting for %q: %v (output %q)", s, err, w.out.String())
		}
		if typ == websocket.MessageText {
			w.t.Fatalf("waiting for %q: got %s (output %q)", s, b, w.out.String())
		}
		if len(b) > 0 && b[0] == 1 {
			w.out.Write(b[1:])
		}
	}
}

// closeStatus reads until the socket closes and returns its status.
func (w *wsConn) closeStatus() (websocket.StatusCode, string) {
	for {
		_, _, err := w.c.Read(w.ctx)
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code, ce.Reason
			}
			return -1, err.Error()
		}
	}
}

func TestWebSocket(t *testing.T) {
	// Through the agent's HTTP proxy, as for any remote host, and
	// straight to the sandbox, as roost up does for its own agent.
	t.Run("agent", func(t *testing.T) { testWebSocket(t, newTestenv(t, controlplane.Config{})) })
	t.Run("local", func(t *testing.T) { testWebSocket(t, newTestenv(t, controlplane.Config{Local: localAgent()})) })
}

func testWebSocket(t *testing.T, e *testenv) {
	id := e.create(t, map[string]any{"templateID": "base", "timeout": 300}).SandboxID
	execPath := "/v1/sandboxes/" + id + "/exec/stream"
	ptyPath := "/v1/sandboxes/" + id + "/pty"

	t.Run("Exec", func(t *testing.T) {
		w, _ := e.dialWS(t, execPath, e.key)
		w.sendJSON(map[string]any{"cmd": "echo out; echo err >&2; exit 7"})
		if m := w.want("start"); m.PID == 0 {
			t.Fatalf("start %+v", m)
		}
		end := w.want("end")
		if end.ExitCode == nil || *end.ExitCode != 7 || w.out.String() != "out\n" || w.err.String() != "err\n" {
			t.Fatalf("end %+v, stdout %q, stderr %q", end, w.out.String(), w.err.String())
		}
		if code, _ := w.closeStatus(); code != websocket.StatusNormalClosure {
			t.Fatalf("close %d", code)
		}
	})

	t.Run("ExecStdin", func(t *testing.T) {
		w, _ := e.dialWS(t, execPath, e.key)
		w.sendJSON(map[string]any{"args": []string{"/bin/cat"}, "stdin": true})
		w.want("start")
		w.sendInput("first line\n")
		w.waitOutput("first line\n") // streamed while cat runs
		w.sendInput("second\n")
		w.sendJSON(map[string]any{"type": "stdin-close"})
		end := w.want("end")
		if end.ExitCode == nil || *end.ExitCode != 0 || w.out.String() != "first line\nsecond\n" {
			t.Fatalf("end %+v, stdout %q", end, w.out.String())
		}
	})

	t.Run("ExecSignalAndTimeout", func(t *testing.T) {
		w, _ := e.dialWS(t, execPath, e.key)
		w.sendJSON(map[string]any{"cmd": "echo ready; sleep 600"})
		w.want("start")
		w.waitOutput("ready")
		w.sendJSON(map[string]any{"type": "signal", "signal": "SIGTERM"})
		if end := w.want("end"); end.ExitCode == nil || *end.ExitCode == 0 || !strings.Contains(end.Status, "terminated") {
			t.Fatalf("end after SIGTERM %+v", end)
		}

		w, _ = e.dialWS(t, execPath, e.key)
		w.sendJSON(map[string]any{"cmd": "sleep 600", "timeout": 1})
		w.want("start")
		if end := w.want("end"); !end.TimedOut {
			t.Fatalf("end after timeout %+v", end)
		}
	})

	t.Run("ExecLeaveKills", func(t *testing.T) {
		w, _ := e.dialWS(t, execPath, e.key)
		w.sendJSON(map[string]any{"cmd": "echo $$ > /tmp/leave.pid; echo ready; sleep 600"})
		w.want("start")
		w.waitOutput("ready")
		w.c.Close(websocket.StatusNormalClosure, "bye")
		deadline := time.Now().Add(10 * time.Second)
		for {
			got := e.exec(t, id, map[string]any{"cmd": "kill -0 $(cat /tmp/leave.pid) 2>/dev/null && echo alive || echo gone"})
			if got.Stdout == "gone\n" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the command outlived its client")
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("ExecErrors", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			req  any
			code websocket.StatusCode
		}{
			{"no command", map[string]any{}, 4400},
			{"unknown program", map[string]any{"args": []string{"/no/such/program"}}, 4400},
			{"bad json", "not an object", 4400},
		} {
			w, _ := e.dialWS(t, execPath, e.key)
			w.sendJSON(tc.req)
			if code, reason := w.closeStatus(); code != tc.code || reason == "" {
				t.Errorf("%s: close %d %q, want %d with a reason", tc.name, code, reason, tc.code)
			}
		}
		// stdin not asked for, then sent.
		w, _ := e.dialWS(t, execPath, e.key)
		w.sendJSON(map[string]any{"cmd": "sleep 5"})
		w.want("start")
		w.sendInput("x")
		if code, _ := w.closeStatus(); code != 4400 {
			t.Errorf("stdin without asking: close %d", code)
		}
		if _, status := e.dialWS(t, execPath, ""); status != http.StatusUnauthorized {
			t.Errorf("no key: %d", status)
		}
		if _, status := e.dialWS(t, "/v1/sandboxes/nosuchsandbox1/exec/stream", e.key); status != http.StatusNotFound {
			t.Errorf("unknown sandbox: %d", status)
		}
	})

	// A browser cannot set headers on a WebSocket: the dashboard offers its
	// key as a subprotocol, from the API's own origin.
	t.Run("BrowserSubprotocol", func(t *testing.T) {
		dial := func(origin string, protocols ...string) (*websocket.Conn, int) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a hang guard
			t.Cleanup(cancel)
			h := http.Header{"Origin": {origin}}
			c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.url, "http")+ptyPath+"?cmd=echo+from-browser", &websocket.DialOptions{HTTPHeader: h, Subprotocols: protocols})
			if err != nil {
				if resp == nil {
					t.Fatalf("dial: %v", err)
				}
				return nil, resp.StatusCode
			}
			t.Cleanup(func() { c.CloseNow() })
			return c, http.StatusSwitchingProtocols
		}
		c, status := dial(e.url, "roost", "roost.key."+e.key)
		if status != http.StatusSwitchingProtocols || c.Subprotocol() != "roost" {
			t.Fatalf("key as subprotocol: status %d, subprotocol %q", status, c.Subprotocol())
		}
		w := &wsConn{t: t, c: c, ctx: t.Context()}
		w.want("start")
		w.waitOutput("from-browser")
		if _, status := dial(e.url, "roost", "roost.key.e2b_0000000000000000000000000000000000000000"); status != http.StatusUnauthorized {
			t.Errorf("a wrong key as subprotocol: %d, want 401", status)
		}
		if _, status := dial("http://evil.example", "roost", "roost.key."+e.key); status != http.StatusForbidden {
			t.Errorf("another origin: %d, want 403", status)
		}
	})

	t.Run("PTY", func(t *testing.T) {
		w, _ := e.dialWS(t, ptyPath+"?cols=100&rows=30", e.key)
		pid := w.want("start").PID
		w.sendInput("stty size; echo pty-$((6*7))\n")
		w.waitOutput("30 100")
		w.waitOutput("pty-42")
		w.sendJSON(map[string]any{"type": "resize", "cols": 120, "rows": 40})
		w.sendInput("stty size\n")
		w.waitOutput("40 120")
		w.sendInput("echo marker-before-detach\n")
		w.waitOutput("marker-before-detach")
		w.c.Close(websocket.StatusNormalClosure, "detach")

		// Reattach: the scrollback first, then live input works.
		r, _ := e.dialWS(t, ptyPath+"?pid="+strconv.FormatUint(uint64(pid), 10), e.key)
		if got := r.want("start").PID; got != pid {
			t.Fatalf("reattached to %d, want %d", got, pid)
		}
		r.waitOutput("marker-before-detach")
		r.sendInput("echo again-$((2*21))\n")
		r.waitOutput("again-42")
		r.sendInput("exit 3\n")
		if end := r.want("end"); end.ExitCode == nil || *end.ExitCode != 3 {
			t.Fatalf("end %+v", end)
		}
	})

	t.Run("PTYCommandAndKill", func(t *testing.T) {
		w, _ := e.dialWS(t, ptyPath+"?cmd="+url.QueryEscape("echo in-$TERM; sleep 600"), e.key)
		w.want("start")
		w.waitOutput("in-xterm-256color")
		w.sendJSON(map[string]any{"type": "kill"})
		if end := w.want("end"); end.ExitCode == nil || *end.ExitCode == 0 {
			t.Fatalf("end after kill %+v", end)
		}
	})

	t.Run("PTYErrors", func(t *testing.T) {
		for path, want := range map[string]int{
			ptyPath + "?cols=0":                            http.StatusBadRequest,
			ptyPath + "?rows=abc":                          http.StatusBadRequest,
			ptyPath + "?pid=999999":                        http.StatusNotFound,
			ptyPath + "?pid=1&cmd=ls":                      http.StatusBadRequest,
			ptyPath + "?user=nosuchuser":                   http.StatusBadRequest,
			"/v1/sandboxes/nosuchsandbox1/pty":             http.StatusNotFound,
			ptyPath + "?cwd=" + url.QueryEscape("/no/dir"): http.StatusBadRequest,
		} {
			if _, status := e.dialWS(t, path, e.key); status != want {
				t.Errorf("%s: %d, want %d", path, status, want)
			}
		}
		w, _ := e.dialWS(t, ptyPath, e.key)
		w.want("start")
		w.sendJSON(map[string]any{"type": "resize", "cols": 0, "rows": 10})
		if code, _ := w.closeStatus(); code != 4400 {
			t.Errorf("bad resize: close %d", code)
		}
	})
}
