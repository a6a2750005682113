package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// chaosTerminal is a terminal session (GET /v1/sandboxes/{id}/pty)
// opened through one replica, which has printed a marker.
type chaosTerminal struct {
	sandbox string
	pid     uint32
	ws      *websocket.Conn
}

const terminalMarker = "chaos-before-stop"

func dialTerminal(t *testing.T, api, key, sandbox, query string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	h := http.Header{}
	h.Set("X-API-Key", key)
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(api, "http")+"/v1/sandboxes/"+sandbox+"/pty"+query, &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		t.Fatalf("terminal of %s through %s: %v", sandbox, api, err)
	}
	ws.SetReadLimit(1 << 22)
	return ws
}

// openTerminal starts a terminal in sandbox through api and has it echo
// the marker.
func openTerminal(t *testing.T, api, key, sandbox string) *chaosTerminal {
	t.Helper()
	term := &chaosTerminal{sandbox: sandbox, ws: dialTerminal(t, api, key, sandbox, "")}
	term.pid = readStart(t, term.ws)
	if err := term.ws.Write(t.Context(), websocket.MessageBinary, append([]byte{0}, "echo "+terminalMarker+"\n"...)); err != nil {
		t.Fatal(err)
	}
	readUntil(t, term.ws, terminalMarker)
	return term
}

// readStart reads the session's start message and returns its pid.
func readStart(t *testing.T, ws *websocket.Conn) uint32 {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	typ, b, err := ws.Read(ctx)
	var m struct {
		Type string `json:"type"`
		PID  uint32 `json:"pid"`
	}
	if err != nil || typ != websocket.MessageText || json.Unmarshal(b, &m) != nil || m.Type != "start" {
		t.Fatalf("terminal start: %s, %v", b, err)
	}
	return m.PID
}

// readUntil reads the terminal's output until it holds want.
func readUntil(t *testing.T, ws *websocket.Conn, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var out strings.Builder
	for !strings.Contains(out.String(), want) {
		typ, b, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("terminal output %q: %v; want %q", out.String(), err, want)
		}
		if typ == websocket.MessageBinary && len(b) > 0 {
			out.Write(b[1:])
		}
	}
}

// waitClosed waits until the server ends the session, and returns the
// status of its close frame: -1 when the connection ended without one
// (an abnormal closure, 1006 to a browser).
func (c *chaosTerminal) waitClosed(t *testing.T, within time.Duration) websocket.StatusCode {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), within)
	defer cancel()
	for {
		if _, _, err := c.ws.Read(ctx); err != nil {
			if ctx.Err() != nil {
				t.Fatalf("terminal of %s still open %v after its replica began to stop", c.sandbox, within)
			}
			return websocket.CloseStatus(err)
		}
	}
}

// reattach opens the session again through api: its scrollback holds
// the marker, and it still takes input.
func (c *chaosTerminal) reattach(t *testing.T, api, key string) {
	t.Helper()
	ws := dialTerminal(t, api, key, c.sandbox, "?pid="+strconv.FormatUint(uint64(c.pid), 10))
	defer ws.CloseNow()
	if pid := readStart(t, ws); pid != c.pid {
		t.Fatalf("reattached to pid %d, want %d", pid, c.pid)
	}
	readUntil(t, ws, terminalMarker)
	if err := ws.Write(t.Context(), websocket.MessageBinary, append([]byte{0}, "echo chaos-after\n"...)); err != nil {
		t.Fatal(err)
	}
	readUntil(t, ws, "chaos-after")
}
