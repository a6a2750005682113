package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestServerGracefulStop runs `roost server` and `roost agent` as real
// processes and stops the server with SIGTERM under a terminal session
// and an exec request in flight. The terminal's WebSocket is closed with
// 1001 (going away), not dropped; the exec finishes and is answered; the
// server exits by itself. A server started again on the same data
// reattaches to the terminal, which ran on; `roost shell`'s terminal (a
// stream, not a WebSocket) attaches again by itself and goes on.
func TestServerGracefulStop(t *testing.T) {
	_, bin, work := processTest(t, "a server, an agent and a sandbox", "roost-stop.")

	const key = "roost_test_stop_0123456789abcdef"
	srv := startServer(t, work, bin, key)
	serverDir, api := srv.dir, srv.api

	agentDir := startAgent(t, work, bin, "agent", serverDir, api).dir

	var sb struct {
		ID string `json:"sandboxID"`
	}
	apiCall(t, "POST", api+"/v2/sandboxes", key, `{"templateID":"base","timeout":600}`, http.StatusCreated, &sb)
	term := openTerminal(t, api, key, sb.ID)
	defer term.ws.CloseNow()
	shell := startShell(t, api, key, sb.ID)
	shell.echo(t, "before", 30*time.Second)

	type answer struct {
		status int
		stdout string
		err    error
	}
	inFlight := make(chan answer, 1)
	go func() {
		body := `{"cmd":"touch /tmp/begun; sleep 2; echo drained"}`
		req, _ := http.NewRequestWithContext(t.Context(), "POST", api+"/v1/sandboxes/"+sb.ID+"/exec", strings.NewReader(body))
		req.Header.Set("X-API-Key", key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			inFlight <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		var res struct{ Stdout string }
		err = json.NewDecoder(resp.Body).Decode(&res)
		inFlight <- answer{resp.StatusCode, res.Stdout, err}
	}()
	for {
		var res struct{ ExitCode int }
		apiCall(t, "POST", api+"/v1/sandboxes/"+sb.ID+"/exec", key, `{"cmd":"test -f /tmp/begun"}`, http.StatusOK, &res)
		if res.ExitCode == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}

	stopped := make(chan struct{})
	go func() { srv.p.stop(); close(stopped) }()
	if status := term.waitClosed(t, 15*time.Second); status != websocket.StatusGoingAway {
		t.Errorf("the terminal closed with %s, want 1001 (going away)", closeName(status))
	}
	if a := <-inFlight; a.err != nil || a.status != http.StatusOK || a.stdout != "drained\n" {
		t.Errorf("the exec in flight when the server stopped: %d %q, %v; want 200 and its output", a.status, a.stdout, a.err)
	}
	<-stopped
	if st := srv.p.cmd.ProcessState; !st.Success() {
		t.Errorf("the server ended %v, want a clean exit on SIGTERM", st)
	}

	srv.restart(t, work, bin, "server-again")
	term.reattach(t, api, key)
	shell.echo(t, "after", 30*time.Second) // its stream broke; it attached again
	shell.end(t)
	apiCall(t, "DELETE", api+"/sandboxes/"+sb.ID, key, "", http.StatusNoContent, nil)
	wantNoLeftovers(t, []string{sb.ID}, agentDir)
}
