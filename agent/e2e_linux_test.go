package agent_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"roost.dev/roost/agent"
	"roost.dev/roost/bench/samples"
	"roost.dev/roost/errdefs"
	rpc "roost.dev/roost/gen/process"
	"roost.dev/roost/gen/process/processconnect"
	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
	"roost.dev/roost/gen/roost/hostagent/v1/hostagentv1connect"
	"roost.dev/roost/network"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/namespace"
	"roost.dev/roost/runtime/namespace/namespacetest"
	"roost.dev/roost/runtime/runtimetest"
	"roost.dev/roost/template"
	"roost.dev/roost/template/templatetest"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		runHelperAgent()
		return
	}
	namespacetest.InstallInit() // the driver runs cmd/roost-init, found next to this binary
	os.Exit(m.Run())
}

const agentToken = "e2e-agent-token"

// host is one test's machine: a data dir shared by the agents it starts,
// one after the other, as a real host's agent restarts.
type host struct {
	t       testing.TB
	dataDir string
	envd    string
	base    template.Template
	// slots is the window of network slots this test's agents use. Other
	// packages' tests create sandboxes on this host at the same time with
	// their own network managers, from the lowest slots up; everything
	// outside the window is reserved so the slots never collide.
	slotLo, slotHi int
	current        *agentProc
	// newRuntime makes the runtime of each agent the host starts; nil:
	// the namespace runtime.
	newRuntime func(dataDir string, log *slog.Logger) runtime.Runtime
	// envdTimeout, when set, is each agent's Config.EnvdTimeout.
	envdTimeout time.Duration
}

// agentProc is one "run" of the agent: what cmd/roost wires together,
// in-process, serving on loopback.
type agentProc struct {
	m      *agent.Manager
	rt     runtime.Runtime
	srv    *httptest.Server
	client hostagentv1connect.HostAgentServiceClient
}

func newHost(t testing.TB) *host {
	t.Helper()
	runtimetest.RequireRoot(t)
	if a := namespace.Probe(); !a.Available {
		t.Skipf("namespace runtime unavailable: %s", a.Reason)
	}
	base := templatetest.Base(t)
	n, _ := rand.Int(rand.Reader, big.NewInt(14000))
	lo := 2000 + int(n.Int64())
	h := &host{t: t, dataDir: t.TempDir(), envd: runtimetest.Envd(t), base: base, slotLo: lo, slotHi: lo + 32}
	t.Cleanup(h.destroyAll)
	return h
}

func (h *host) log() *slog.Logger {
	return slog.New(slog.NewTextHandler(h.t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// start starts an agent on the host's data dir, as `roost agent` does
// after a restart.
func (h *host) start() *agentProc {
	h.t.Helper()
	return h.startWith(templatetest.Store(h.t))
}

// startWith is start with a template store of the test's.
func (h *host) startWith(templates *template.Store) *agentProc {
	h.t.Helper()
	return h.startWithConfig(templates, nil)
}

// startWithConfig is startWith with the test's changes to the agent's
// Config (nil: none).
func (h *host) startWithConfig(templates *template.Store, configure func(*agent.Config)) *agentProc {
	t := h.t
	t.Helper()
	log := h.log()
	var rt runtime.Runtime
	if h.newRuntime != nil {
		rt = h.newRuntime(h.dataDir, log)
	}
	m, rt, err := newAgent(h.dataDir, h.envd, h.slotLo, h.slotHi, rt, templates, log, func(c *agent.Config) {
		if h.envdTimeout > 0 {
			c.EnvdTimeout = h.envdTimeout
		}
		if configure != nil {
			configure(c)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(agent.NewServer(m, agent.ServerConfig{Token: agentToken}, log).Handler())
	a := &agentProc{m: m, rt: rt, srv: srv,
		client: hostagentv1connect.NewHostAgentServiceClient(srv.Client(), srv.URL, connect.WithInterceptors(bearer(agentToken)))}
	h.current = a
	return a
}

// newAgent wires a Manager the way cmd/roost does, on rt (nil: the
// namespace runtime), with the network slots outside [slotLo, slotHi)
// reserved.
func newAgent(dataDir, envd string, slotLo, slotHi int, rt runtime.Runtime, templates *template.Store, log *slog.Logger, configure ...func(*agent.Config)) (*agent.Manager, runtime.Runtime, error) {
	if rt == nil {
		var err error
		if rt, err = namespace.New(namespace.Config{DataDir: filepath.Join(dataDir, "runtime", "namespace")}, log); err != nil {
			return nil, nil, err
		}
	}
	nw, err := network.New(network.Config{}, log)
	if err != nil {
		return nil, nil, err
	}
	for s := 1; s <= nw.Capacity(); s++ {
		if s < slotLo || s >= slotHi {
			if err := nw.Reserve(s); err != nil {
				return nil, nil, err
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := agent.Config{
		DataDir: dataDir, Envd: envd, Version: "e2e",
		// The prune is host-wide, and other packages' tests run sandboxes
		// on this host right now.
		SkipPrune: true,
	}
	for _, c := range configure {
		if c != nil {
			c(&cfg)
		}
	}
	m, err := agent.New(ctx, cfg, rt, nw, templates, log)
	return m, rt, err
}

// stop stops an agent the way SIGTERM (or kill -9) does: it stops
// serving and leaves every sandbox running.
func (a *agentProc) stop() {
	a.srv.Close()
	a.m.Close()
}

// destroyAll removes whatever sandboxes the test left, through the last
// agent, so a failing test leaks nothing.
func (h *host) destroyAll() {
	if h.current == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, sb := range h.current.m.List() {
		if err := h.current.m.Destroy(ctx, sb.ID); err != nil {
			h.t.Errorf("cleanup: destroy %s: %v", sb.ID, err)
		}
	}
	h.current.stop()
	// The driver keeps template mounts under its data dir for the next
	// sandbox; this host's data dir goes, so they go too.
	unmountBelow(h.t, h.dataDir)
}

// unmountBelow detaches every mount at or below dir, deepest first.
func unmountBelow(t testing.TB, dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Error(err)
		return
	}
	var mounts []string
	for line := range strings.SplitSeq(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			mounts = append(mounts, f[4])
		}
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		if err := unix.Unmount(mounts[i], unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mounts[i], err)
		}
	}
}

func bearer(token string) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+token)
			return next(ctx, req)
		}
	}
}

func testID(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// execIn runs a bash script in a sandbox through its envd, with the
// sandbox's access token.
func execIn(ctx context.Context, envd, token, script string) (string, int, error) {
	c := processconnect.NewProcessClient(http.DefaultClient, "http://"+envd)
	req := connect.NewRequest(&rpc.StartRequest{Process: &rpc.ProcessConfig{Cmd: "/bin/bash", Args: []string{"-c", script}}})
	if token != "" {
		req.Header().Set("X-Access-Token", token)
	}
	stream, err := c.Start(ctx, req)
	if err != nil {
		return "", 0, err
	}
	var out bytes.Buffer
	exit, ended := 0, false
	for stream.Receive() {
		ev := stream.Msg().GetEvent()
		out.Write(ev.GetData().GetStdout())
		out.Write(ev.GetData().GetStderr())
		if e := ev.GetEnd(); e != nil {
			exit, ended = int(e.GetExitCode()), true
		}
	}
	if err := stream.Err(); err != nil {
		return "", 0, err
	}
	if !ended {
		return "", 0, fmt.Errorf("no end event")
	}
	return out.String(), exit, nil
}

func mustExec(t *testing.T, envd, token, script string) string {
	t.Helper()
	out, code, err := execIn(ctxT(t), envd, token, script)
	if err != nil || code != 0 {
		t.Fatalf("exec %q: exit %d, %v: %s", script, code, err, out)
	}
	return out
}

// proxyGet fetches a sandbox port through the agent's /proxy.
func proxyGet(t *testing.T, a *agentProc, id string, port int, path string, header http.Header) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctxT(t), http.MethodGet, fmt.Sprintf("%s/proxy/%s/%d%s", a.srv.URL, id, port, path), nil)
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+agentToken)
	resp, err := a.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("proxy %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func wantCode(t *testing.T, what string, err error, code connect.Code) {
	t.Helper()
	if connect.CodeOf(err) != code {
		t.Errorf("%s: %v, want %s", what, err, code)
	}
}

func TestAgentLifecycle(t *testing.T) {
	h := newHost(t)
	a := h.start()
	ctx := ctxT(t)
	id, envdToken := testID("e2e-"), "envd-token-"+testID("")

	created, err := a.client.CreateSandbox(ctx, connect.NewRequest(&hostagentv1.CreateSandboxRequest{
		SandboxId: id, Template: "base", TimeoutSeconds: 600,
		EnvVars:  map[string]string{"GREETING": "hello from roost"},
		Metadata: map[string]string{"owner": "e2e"}, EnvdAccessToken: envdToken,
	}))
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	sb := created.Msg.GetSandbox()
	if sb.GetSandboxId() != id || sb.GetState() != hostagentv1.SandboxState_SANDBOX_STATE_RUNNING ||
		sb.GetEnvdAddress() == "" || sb.GetMetadata()["owner"] != "e2e" || !sb.GetAllowInternet() ||
		sb.GetLimits().GetMemoryMb() != agent.DefaultMemoryMB || !sb.GetEndAt().AsTime().After(sb.GetStartedAt().AsTime()) {
		t.Fatalf("created sandbox: %v", sb)
	}
	envd := sb.GetEnvdAddress()

	t.Run("envd is initialised", func(t *testing.T) {
		resp, err := http.Get("http://" + envd + "/health")
		if err != nil || resp.StatusCode != http.StatusNoContent {
			t.Fatalf("health: %v %v", resp, err)
		}
		resp.Body.Close()
		if out := mustExec(t, envd, envdToken, "echo hi"); out != "hi\n" {
			t.Errorf("echo hi: %q", out)
		}
		out := mustExec(t, envd, envdToken, `echo "$GREETING"; whoami; pwd; hostname`)
		want := fmt.Sprintf("hello from roost\n%s\n%s\n%s\n", h.base.DefaultUser, h.base.Workdir, id)
		if out != want {
			t.Errorf("env, user, workdir, hostname: %q, want %q", out, want)
		}
		if _, _, err := execIn(ctx, envd, "", "true"); connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Errorf("exec without the access token: %v, want unauthenticated", err)
		}
	})

	t.Run("proxy", func(t *testing.T) {
		if code, body := proxyGet(t, a, id, 49983, "/health", nil); code != http.StatusNoContent {
			t.Errorf("envd health through the proxy: %d %s", code, body)
		}
		if code, body := proxyGet(t, a, id, 49983, "/envs", http.Header{"X-Access-Token": {envdToken}}); code != http.StatusOK || !strings.Contains(body, "hello from roost") {
			t.Errorf("envd /envs through the proxy: %d %s", code, body)
		}
		// A user's server, listening on loopback only inside the sandbox:
		// envd's forwarder makes it reachable, the proxy reaches it.
		mustExec(t, envd, envdToken, "mkdir -p ~/site/sub && echo proxied > ~/site/sub/index.html && cd ~/site && (nohup python3 -m http.server 8000 --bind 127.0.0.1 >/dev/null 2>&1 &)")
		var code int
		var body string
		for range 600 { // the server takes a moment to start
			if code, body = proxyGet(t, a, id, 8000, "/sub/", nil); code == http.StatusOK {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if code != http.StatusOK || body != "proxied\n" {
			t.Errorf("user server through the proxy: %d %q", code, body)
		}
		if code, _ := proxyGet(t, a, "nosuchsandbox", 8000, "/", nil); code != http.StatusBadGateway {
			t.Errorf("unknown sandbox: %d, want 502", code)
		}
	})

	t.Run("pause and resume", func(t *testing.T) {
		mustExec(t, envd, envdToken, "echo kept > /tmp/kept; (nohup sleep 100000 >/dev/null 2>&1 &)")
		p, err := a.client.PauseSandbox(ctx, connect.NewRequest(&hostagentv1.PauseSandboxRequest{SandboxId: id}))
		if err != nil || p.Msg.GetSandbox().GetState() != hostagentv1.SandboxState_SANDBOX_STATE_PAUSED {
			t.Fatalf("pause: %v %v", p, err)
		}
		if code, _ := proxyGet(t, a, id, 49983, "/health", nil); code != http.StatusBadGateway {
			t.Errorf("proxy to a paused sandbox: %d, want 502", code)
		}
		_, err = a.client.PauseSandbox(ctx, connect.NewRequest(&hostagentv1.PauseSandboxRequest{SandboxId: id}))
		wantCode(t, "pause a paused sandbox", err, connect.CodeFailedPrecondition)
		// A paused sandbox hibernates (CRIU): its processes come back.
		h, err := a.client.PauseSandbox(ctx, connect.NewRequest(&hostagentv1.PauseSandboxRequest{SandboxId: id, Hibernate: true}))
		if err != nil || !h.Msg.GetSandbox().GetHibernated() {
			t.Fatalf("hibernate a paused sandbox: %v %v", h, err)
		}
		if g, err := a.client.GetSandbox(ctx, connect.NewRequest(&hostagentv1.GetSandboxRequest{SandboxId: id})); err != nil || g.Msg.GetSandbox().GetDiskBytes() == 0 {
			t.Errorf("a hibernated sandbox's disk: %v %v, want its images counted", g, err)
		}
		list, err := a.client.ListSandboxes(ctx, connect.NewRequest(&hostagentv1.ListSandboxesRequest{
			States: []hostagentv1.SandboxState{hostagentv1.SandboxState_SANDBOX_STATE_PAUSED}}))
		if err != nil || len(list.Msg.GetSandboxes()) != 1 || list.Msg.GetSandboxes()[0].GetSandboxId() != id {
			t.Errorf("list paused: %v %v", list, err)
		}
		r, err := a.client.ResumeSandbox(ctx, connect.NewRequest(&hostagentv1.ResumeSandboxRequest{SandboxId: id, TimeoutSeconds: proto.Int64(900)}))
		if err != nil || r.Msg.GetSandbox().GetState() != hostagentv1.SandboxState_SANDBOX_STATE_RUNNING {
			t.Fatalf("resume: %v %v", r, err)
		}
		_, err = a.client.ResumeSandbox(ctx, connect.NewRequest(&hostagentv1.ResumeSandboxRequest{SandboxId: id}))
		wantCode(t, "resume a running sandbox", err, connect.CodeFailedPrecondition)
		if out := mustExec(t, envd, envdToken, "cat /tmp/kept; pgrep -c -x sleep"); out != "kept\n1\n" {
			t.Errorf("after resume: %q, want the file and the process", out)
		}
	})

	t.Run("host info", func(t *testing.T) {
		info, err := a.client.GetHostInfo(ctx, connect.NewRequest(&hostagentv1.GetHostInfoRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		hi := info.Msg.GetHost()
		if hi.GetRuntime() != "namespace" || !hi.GetCapabilities().GetPause() || !hi.GetProbe().GetAvailable() ||
			hi.GetCapacity().GetCpus() < 1 || hi.GetCapacity().GetMaxSandboxes() < 1 || hi.GetUsage().GetSandboxes() != 1 ||
			hi.GetUsage().GetRunning() != 1 || hi.GetVersions().GetEnvd() == "" || hi.GetVersions().GetKernel() == "" {
			t.Errorf("host info: %v", hi)
		}
		ts, err := a.client.ListTemplates(ctx, connect.NewRequest(&hostagentv1.ListTemplatesRequest{}))
		if err != nil || len(ts.Msg.GetTemplates()) == 0 {
			t.Errorf("templates: %v %v", ts, err)
		}
	})

	// The agent stops (as with SIGTERM or kill -9: nothing runs on exit
	// that touches sandboxes) and a new one starts on the same data dir.
	a.stop()
	b := h.start()

	t.Run("restart re-adopts", func(t *testing.T) {
		got, err := b.client.GetSandbox(ctx, connect.NewRequest(&hostagentv1.GetSandboxRequest{SandboxId: id}))
		if err != nil {
			t.Fatalf("get after restart: %v", err)
		}
		if s := got.Msg.GetSandbox(); s.GetState() != hostagentv1.SandboxState_SANDBOX_STATE_RUNNING || s.GetEnvdAddress() != envd || s.GetMetadata()["owner"] != "e2e" {
			t.Errorf("after restart: %v", s)
		}
		if out := mustExec(t, envd, envdToken, "cat /tmp/kept; pgrep -c -x sleep"); out != "kept\n1\n" {
			t.Errorf("after restart: %q, want the file and the process", out)
		}
		if code, body := proxyGet(t, b, id, 8000, "/sub/", nil); code != http.StatusOK || body != "proxied\n" {
			t.Errorf("user server through the new agent's proxy: %d %q", code, body)
		}
		if _, err := b.client.SetTimeout(ctx, connect.NewRequest(&hostagentv1.SetTimeoutRequest{SandboxId: id, TimeoutSeconds: 1200})); err != nil {
			t.Errorf("set timeout: %v", err)
		}
	})

	t.Run("destroy", func(t *testing.T) {
		if _, err := b.client.DestroySandbox(ctx, connect.NewRequest(&hostagentv1.DestroySandboxRequest{SandboxId: id})); err != nil {
			t.Fatalf("destroy: %v", err)
		}
		_, err := b.client.GetSandbox(ctx, connect.NewRequest(&hostagentv1.GetSandboxRequest{SandboxId: id}))
		wantCode(t, "get a destroyed sandbox", err, connect.CodeNotFound)
		_, err = b.client.DestroySandbox(ctx, connect.NewRequest(&hostagentv1.DestroySandboxRequest{SandboxId: id}))
		wantCode(t, "destroy twice", err, connect.CodeNotFound)
		if code, _ := proxyGet(t, b, id, 8000, "/", nil); code != http.StatusBadGateway {
			t.Errorf("proxy right after destroy: %d, want 502", code)
		}
		// The rest goes in the background.
		if err := b.m.WaitTeardowns(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(h.dataDir, "sandboxes", id)); !os.IsNotExist(err) {
			t.Errorf("state dir after destroy: %v", err)
		}
		if _, err := os.Stat(network.NetnsPath(id)); !os.IsNotExist(err) {
			t.Errorf("netns after destroy: %v", err)
		}
		if code, _ := proxyGet(t, b, id, 8000, "/", nil); code != http.StatusBadGateway {
			t.Errorf("proxy after destroy: %d, want 502", code)
		}
	})
}

func TestAgentBadInput(t *testing.T) {
	h := newHost(t)
	a := h.start()
	ctx := ctxT(t)
	create := func(r *hostagentv1.CreateSandboxRequest) error {
		_, err := a.client.CreateSandbox(ctx, connect.NewRequest(r))
		return err
	}
	for _, tc := range []struct {
		name string
		req  *hostagentv1.CreateSandboxRequest
		code connect.Code
	}{
		{"unknown template", &hostagentv1.CreateSandboxRequest{Template: "no-such-template"}, connect.CodeNotFound},
		{"invalid template name", &hostagentv1.CreateSandboxRequest{Template: "../../etc"}, connect.CodeInvalidArgument},
		{"too many vcpus", &hostagentv1.CreateSandboxRequest{Vcpus: 100000}, connect.CodeInvalidArgument},
		{"negative vcpus", &hostagentv1.CreateSandboxRequest{Vcpus: -1}, connect.CodeInvalidArgument},
		{"too little memory", &hostagentv1.CreateSandboxRequest{MemoryMb: 1}, connect.CodeInvalidArgument},
		{"more memory than the host", &hostagentv1.CreateSandboxRequest{MemoryMb: 1 << 30}, connect.CodeInvalidArgument},
		{"too little disk", &hostagentv1.CreateSandboxRequest{DiskMb: 10}, connect.CodeInvalidArgument},
		{"too much disk", &hostagentv1.CreateSandboxRequest{DiskMb: 2 << 20}, connect.CodeInvalidArgument},
		{"negative timeout", &hostagentv1.CreateSandboxRequest{TimeoutSeconds: -5}, connect.CodeInvalidArgument},
		{"bad id", &hostagentv1.CreateSandboxRequest{SandboxId: "Not/An/ID"}, connect.CodeInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := create(tc.req)
			wantCode(t, tc.name, err, tc.code)
			if err != nil && connect.CodeOf(err) == tc.code && len(err.Error()) < 20 {
				t.Errorf("error %q does not say what is wrong", err)
			}
		})
	}
	if n := len(a.m.List()); n != 0 {
		t.Errorf("%d sandboxes after failed creates", n)
	}

	id := testID("dup-")
	if err := create(&hostagentv1.CreateSandboxRequest{SandboxId: id}); err != nil {
		t.Fatalf("create: %v", err)
	}
	wantCode(t, "duplicate id", create(&hostagentv1.CreateSandboxRequest{SandboxId: id}), connect.CodeAlreadyExists)

	for name, call := range map[string]func() error{
		"destroy unknown": func() error {
			_, err := a.client.DestroySandbox(ctx, connect.NewRequest(&hostagentv1.DestroySandboxRequest{SandboxId: "nosuch"}))
			return err
		},
		"get unknown": func() error {
			_, err := a.client.GetSandbox(ctx, connect.NewRequest(&hostagentv1.GetSandboxRequest{SandboxId: "nosuch"}))
			return err
		},
		"pause unknown": func() error {
			_, err := a.client.PauseSandbox(ctx, connect.NewRequest(&hostagentv1.PauseSandboxRequest{SandboxId: "nosuch"}))
			return err
		},
		"resume unknown": func() error {
			_, err := a.client.ResumeSandbox(ctx, connect.NewRequest(&hostagentv1.ResumeSandboxRequest{SandboxId: "nosuch"}))
			return err
		},
	} {
		wantCode(t, name, call(), connect.CodeNotFound)
	}
	_, err := a.client.SetTimeout(ctx, connect.NewRequest(&hostagentv1.SetTimeoutRequest{SandboxId: id, TimeoutSeconds: -1}))
	wantCode(t, "negative timeout", err, connect.CodeInvalidArgument)
	_, err = a.client.ResumeSandbox(ctx, connect.NewRequest(&hostagentv1.ResumeSandboxRequest{SandboxId: id, TimeoutSeconds: proto.Int64(0)}))
	wantCode(t, "resume with a zero timeout", err, connect.CodeInvalidArgument)
	_, err = a.client.ListSandboxes(ctx, connect.NewRequest(&hostagentv1.ListSandboxesRequest{States: []hostagentv1.SandboxState{42}}))
	wantCode(t, "list an unknown state", err, connect.CodeInvalidArgument)
}

func TestAgentTimeoutReaps(t *testing.T) {
	h := newHost(t)
	a := h.start()
	ctx := ctxT(t)
	sb, err := a.m.Create(ctx, agent.CreateRequest{Timeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.m.SetTimeout(sb.ID, 0); err != nil { // 0: end now
		t.Fatal(err)
	}
	// The reaper destroys it within a few of its 1 s ticks; the bound
	// only keeps a broken reaper from hanging the test.
	for range 600 {
		if _, err := a.m.Get(sb.ID); err != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := a.m.Get(sb.ID); err == nil {
		t.Fatal("sandbox not reaped 30 s after its timeout")
	}
	// Gone from the manager once cut off; its files go at the end of
	// its teardown, right after.
	dir := filepath.Join(h.dataDir, "sandboxes", sb.ID)
	for range 100 {
		if _, err := os.Stat(dir); os.IsNotExist(err) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("state dir 5 s after reaping: %v", err)
	}
}

func TestAgentRecoveryCleansUp(t *testing.T) {
	h := newHost(t)
	a := h.start()
	ctx := ctxT(t)
	gone, err := a.m.Create(ctx, agent.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	kept, err := a.m.Create(ctx, agent.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	torn, err := a.m.Create(ctx, agent.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	a.stop()
	// While no agent runs: one sandbox dies behind the agent's back, a
	// create is cut short after its record was written, another before,
	// and a newer agent left a record this one cannot read. One was
	// destroyed, and the agent stopped before its background teardown:
	// its record says stopped, and it still runs.
	if err := a.rt.Destroy(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	sbDir := func(id string) string { return filepath.Join(h.dataDir, "sandboxes", id) }
	tornRec := filepath.Join(sbDir(torn.ID), "sandbox.json")
	var rec map[string]any
	readJSON(t, tornRec, &rec)
	rec["state"] = "stopped"
	raw, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tornRec, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	for id, rec := range map[string]string{
		"halfmade": fmt.Sprintf(`{"version": 1, "id": "halfmade", "state": "starting", "slot": %d, "spec": {"ID": "halfmade", "StateDir": %q}}`,
			h.slotLo+30, sbDir("halfmade")),
		"norecord":   "",
		"fromfuture": `{"version": 99, "id": "fromfuture", "slot": 5, "newField": {}}`,
	} {
		if err := os.MkdirAll(sbDir(id), 0o700); err != nil {
			t.Fatal(err)
		}
		if rec != "" {
			if err := os.WriteFile(filepath.Join(sbDir(id), "sandbox.json"), []byte(rec), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}

	b := h.start()
	var ids []string
	for _, s := range b.m.List() {
		ids = append(ids, s.ID)
	}
	if len(ids) != 1 || ids[0] != kept.ID {
		t.Errorf("after restart the agent has %v, want only %s", ids, kept.ID)
	}
	for id, want := range map[string]bool{gone.ID: false, torn.ID: false, "halfmade": false, "norecord": false, "fromfuture": true, kept.ID: true} {
		_, err := os.Stat(sbDir(id))
		if exists := err == nil; exists != want {
			t.Errorf("%s: directory exists = %v, want %v", id, exists, want)
		}
	}
	if _, err := os.Stat(network.NetnsPath(gone.ID)); !os.IsNotExist(err) {
		t.Errorf("netns of the dead sandbox: %v", err)
	}
	if _, err := os.Stat(network.NetnsPath(torn.ID)); !os.IsNotExist(err) {
		t.Errorf("netns of the sandbox destroyed before the restart: %v", err)
	}
	if _, err := b.m.Get(torn.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("the sandbox destroyed before the restart: %v, want not found", err)
	}
	// The record it left alone still holds its ID.
	if _, err := b.m.Create(ctx, agent.CreateRequest{ID: "fromfuture"}); !errors.Is(err, agent.ErrExists) {
		t.Errorf("create over a foreign record: %v, want already exists", err)
	}
	if err := os.RemoveAll(sbDir("fromfuture")); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkAgentCreate measures a whole create of a base sandbox (slot,
// network, runtime, envd healthy, /init, record), the template cached, and
// its destroy; p50 and p99 are reported beside the mean.
func BenchmarkAgentCreate(b *testing.B) {
	h := newHost(b)
	a := h.start()
	ctx := context.Background()
	var creates, destroys []time.Duration
	for b.Loop() {
		t0 := time.Now()
		sb, err := a.m.Create(ctx, agent.CreateRequest{})
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := a.m.Destroy(ctx, sb.ID); err != nil {
			b.Fatal(err)
		}
		creates, destroys = append(creates, t1.Sub(t0)), append(destroys, time.Since(t1))
	}
	reportPercentiles(b, "create", creates)
	reportPercentiles(b, "destroy", destroys)
	if err := samples.Durations("agent-create", creates); err != nil {
		b.Error(err)
	}
}

func reportPercentiles(b *testing.B, name string, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	at := func(p float64) float64 { return float64(ds[int(p*float64(len(ds)-1))]) / float64(time.Millisecond) }
	b.ReportMetric(at(0.50), name+"-p50-ms")
	b.ReportMetric(at(0.99), name+"-p99-ms")
}
