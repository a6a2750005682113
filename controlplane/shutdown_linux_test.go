package controlplane_test

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/coder/websocket"

	"roost.dev/roost/controlplane"
	rpc "roost.dev/roost/gen/process"
	"roost.dev/roost/gen/process/processconnect"
)

// TestShutdownGoingAway: a control plane that shuts down, as roost
// server does on SIGTERM (its http.Server's Shutdown beside its own),
// closes its WebSockets with 1001 and a reason rather than leaving them
// to drop, and returns once their handlers have: the terminal runs on
// for a reattach elsewhere, the exec stream's command is killed.
func TestShutdownGoingAway(t *testing.T) {
	e := newTestenv(t, controlplane.Config{})
	sb := e.create(t, map[string]any{"templateID": "base", "timeout": 300})
	id := sb.SandboxID

	term, _ := e.dialWS(t, "/v1/sandboxes/"+id+"/pty", e.key)
	termPID := term.want("start").PID
	term.sendInput("echo going-$((6*7))\n")
	term.waitOutput("going-42")
	exec, _ := e.dialWS(t, "/v1/sandboxes/"+id+"/exec/stream", e.key)
	exec.sendJSON(map[string]any{"cmd": "echo ready; sleep 600"})
	execPID := exec.want("start").PID
	exec.waitOutput("ready")

	// The clients read all along, as clients do: a close handshake
	// waits for their answer.
	var wg sync.WaitGroup
	for name, w := range map[string]*wsConn{"terminal": term, "exec stream": exec} {
		wg.Go(func() {
			if code, reason := w.closeStatus(); code != websocket.StatusGoingAway || reason == "" {
				t.Errorf("%s: closed with %d %q, want 1001 with a reason", name, code, reason)
			}
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second) // roost server's bound
	defer cancel()
	wg.Go(func() { _ = e.srv.Config.Shutdown(ctx) })
	if err := e.cp.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
	wg.Wait()

	// Past the control plane: the sandbox's envd says what runs.
	got, err := e.agent.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	envd := processconnect.NewProcessClient(http.DefaultClient, "http://"+got.Envd.String())
	running := func() []uint32 {
		req := connect.NewRequest(&rpc.ListRequest{})
		req.Header().Set("X-Access-Token", sb.EnvdAccessToken)
		resp, err := envd.List(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		var pids []uint32
		for _, p := range resp.Msg.GetProcesses() {
			pids = append(pids, p.GetPid())
		}
		return pids
	}
	// The kill is the exec handler's last step, which Shutdown waited
	// for; envd lists the process until it has reaped it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids := running()
		if !slices.Contains(pids, termPID) {
			t.Fatalf("processes after the shutdown %v: the terminal %d is gone", pids, termPID)
		}
		if !slices.Contains(pids, execPID) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes after the shutdown %v: the exec stream's %d still runs", pids, execPID)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
