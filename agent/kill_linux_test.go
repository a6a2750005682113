package agent_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"roost.dev/roost/agent"
	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
	"roost.dev/roost/gen/roost/hostagent/v1/hostagentv1connect"
	"roost.dev/roost/template"
	"roost.dev/roost/template/templatetest"
)

// helperEnv makes the test binary run as an agent process (see
// runHelperAgent) instead of running tests; its value is a JSON
// helperConfig.
const helperEnv = "ROOST_AGENT_TEST_HELPER"

type helperConfig struct {
	DataDir, Envd  string
	SlotLo, SlotHi int
	WarmPools      map[string]int
}

// runHelperAgent is a whole agent in its own process, like `roost agent`:
// it prints its address and serves until it is killed.
func runHelperAgent() {
	var cfg helperConfig
	if err := json.Unmarshal([]byte(os.Getenv(helperEnv)), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "helper config:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	templates := template.NewStore(filepath.Join(templatetest.CacheDir(), "templates"), log)
	m, _, err := newAgent(cfg.DataDir, cfg.Envd, cfg.SlotLo, cfg.SlotHi, nil, templates, log,
		func(c *agent.Config) { c.WarmPools = cfg.WarmPools })
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(1)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr().String())
	_ = agent.NewServer(m, agent.ServerConfig{Token: agentToken}, log).Serve(context.Background(), ln)
	os.Exit(1)
}

// lineLog copies a process's output into the test log.
type lineLog struct{ t *testing.T }

func (w lineLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestAgentKill9 kills a real agent process with SIGKILL while it runs a
// sandbox: the sandbox keeps running, its files and processes survive, and
// the next agent re-adopts it.
func TestAgentKill9(t *testing.T) {
	h := newHost(t)
	client := startHelperAgent(t, h, nil)
	ctx := ctxT(t)
	id, token := testID("kill-"), "kill-token"
	created, err := client.CreateSandbox(ctx, connect.NewRequest(&hostagentv1.CreateSandboxRequest{
		SandboxId: id, EnvdAccessToken: token, TimeoutSeconds: 600,
	}))
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	envd := created.Msg.GetSandbox().GetEnvdAddress()
	mustExec(t, envd, token, "echo survived > ~/file; (nohup sleep 100000 >/dev/null 2>&1 &)")

	client.kill()
	// No agent runs now; the sandbox does.
	if out := mustExec(t, envd, token, "cat ~/file; pgrep -c -x sleep"); out != "survived\n1\n" {
		t.Errorf("with the agent dead: %q, want the file and the process", out)
	}
	b := h.start()
	got, err := b.m.Get(id)
	if err != nil || got.State != agent.StateRunning || got.Envd.String() != envd {
		t.Fatalf("re-adopted: %+v, %v", got, err)
	}
	if out := mustExec(t, envd, token, "cat ~/file; pgrep -c -x sleep"); out != "survived\n1\n" {
		t.Errorf("after re-adoption: %q, want the file and the process", out)
	}
	if code, _ := proxyGet(t, b, id, 49983, "/health", nil); code != http.StatusNoContent {
		t.Errorf("proxy after re-adoption: %d", code)
	}
	dctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := b.m.Destroy(dctx, id); err != nil {
		t.Fatalf("destroy after re-adoption: %v", err)
	}
}

// helperAgent is an agent process of runHelperAgent's, and its client.
type helperAgent struct {
	hostagentv1connect.HostAgentServiceClient
	cmd    *exec.Cmd
	killed bool
}

// kill kills the agent process with SIGKILL and waits for it.
func (a *helperAgent) kill() {
	if a.killed {
		return
	}
	a.killed = true
	_ = a.cmd.Process.Kill()
	_ = a.cmd.Wait()
}

// startHelperAgent starts an agent process on h, with warm pools of the
// given sizes (nil: none), killed when the test ends.
func startHelperAgent(t *testing.T, h *host, warmPools map[string]int) *helperAgent {
	t.Helper()
	cfg, _ := json.Marshal(helperConfig{DataDir: h.dataDir, Envd: h.envd, SlotLo: h.slotLo, SlotHi: h.slotHi, WarmPools: warmPools})
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"="+string(cfg))
	cmd.Stderr = lineLog{t}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a := &helperAgent{cmd: cmd}
	t.Cleanup(a.kill)
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("agent process: %v", err)
	}
	a.HostAgentServiceClient = hostagentv1connect.NewHostAgentServiceClient(http.DefaultClient, "http://"+strings.TrimSpace(addr),
		connect.WithInterceptors(bearer(agentToken)))
	return a
}
