package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"roost.dev/roost/agent"
	rpc "roost.dev/roost/gen/process"
	"roost.dev/roost/gen/process/processconnect"
	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
	"roost.dev/roost/gen/roost/hostagent/v1/hostagentv1connect"
	"roost.dev/roost/network"
	"roost.dev/roost/runtime/qemu"
	"roost.dev/roost/runtime/runtimetest"
	"roost.dev/roost/runtime/vmimage"
	"roost.dev/roost/template/templatetest"
)

// TestAgentQEMU runs the agent the way `roost agent --runtime qemu` wires
// it, over its Connect API, with two VM starts (a boot and a restore):
// the guest's own kernel, pause, hibernation to disk, an agent restart
// that re-adopts the hibernated sandbox without starting it, and a resume
// that restores it with its files and a corrected clock.
func TestAgentQEMU(t *testing.T) {
	if testing.Short() {
		t.Skip("boots VMs")
	}
	runtimetest.RequireRoot(t)
	guestInit := runtimetest.GuestInit(t)
	newDriver := func() *qemu.Driver {
		return qemu.New(qemu.Config{DataDir: filepath.Join(templatetest.CacheDir(), "runtime", "qemu"), Init: guestInit}, testLogger(t))
	}
	if a := newDriver().Probe(t.Context()); !a.Available {
		t.Skipf("qemu runtime unavailable: %s", a.Reason)
	}
	templatetest.Base(t)
	envd := runtimetest.Envd(t)
	dataDir := t.TempDir()
	// A window of network slots of its own: other packages' tests run
	// sandboxes on this host at the same time, from the lowest slots up.
	n, _ := rand.Int(rand.Reader, big.NewInt(14000))
	slotLo := 2000 + int(n.Int64())

	type agentRun struct {
		m      *agent.Manager
		srv    *httptest.Server
		client hostagentv1connect.HostAgentServiceClient
	}
	start := func() *agentRun {
		t.Helper()
		nw, err := network.New(network.Config{}, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		for s := 1; s <= nw.Capacity(); s++ {
			if s < slotLo || s >= slotLo+4 {
				if err := nw.Reserve(s); err != nil {
					t.Fatal(err)
				}
			}
		}
		m, err := agent.New(t.Context(), agent.Config{DataDir: dataDir, Envd: envd, Version: "test", SkipPrune: true},
			newDriver(), nw, templatetest.Store(t), testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(agent.NewServer(m, agent.ServerConfig{}, testLogger(t)).Handler())
		return &agentRun{m: m, srv: srv, client: hostagentv1connect.NewHostAgentServiceClient(srv.Client(), srv.URL)}
	}
	stop := func(a *agentRun) {
		a.srv.Close()
		a.m.Close()
	}
	cur := start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, sb := range cur.m.List() {
			if err := cur.m.Destroy(ctx, sb.ID); err != nil {
				t.Errorf("cleanup: destroy %s: %v", sb.ID, err)
			}
		}
		stop(cur)
	})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()

	info, err := cur.client.GetHostInfo(ctx, connect.NewRequest(&hostagentv1.GetHostInfoRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if h := info.Msg.GetHost(); h.GetRuntime() != "qemu" || !h.GetCapabilities().GetVm() || !h.GetCapabilities().GetSnapshot() || !h.GetCapabilities().GetPause() {
		t.Errorf("host info: runtime %q, capabilities %v", h.GetRuntime(), h.GetCapabilities())
	}

	const token = "qemu-envd-token"
	created, err := cur.client.CreateSandbox(ctx, connect.NewRequest(&hostagentv1.CreateSandboxRequest{
		MemoryMb: 256, EnvdAccessToken: token, TimeoutSeconds: 600,
	}))
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	id, envdURL := created.Msg.GetSandbox().GetSandboxId(), "http://"+created.Msg.GetSandbox().GetEnvdAddress()
	hk, err := vmimage.FindHostKernel("/boot", "/lib/modules")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(mustExec(ctx, t, envdURL, token, "uname -r")); got != hk.Version {
		t.Errorf("uname -r in the sandbox: %q, want the guest kernel %s", got, hk.Version)
	}
	mustExec(ctx, t, envdURL, token, "echo kept > ~/state")

	// The agent's proxy reaches a server in a VM sandbox as it does one in
	// a namespace sandbox (through the NAT in the sandbox's namespace).
	mustExec(ctx, t, envdURL, token, "mkdir -p /tmp/www && echo hello-from-the-vm > /tmp/www/index.html && (cd /tmp/www && nohup python3 -m http.server 8080 >/dev/null 2>&1 &)")
	var body string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		resp, err := http.Get(cur.srv.URL + "/proxy/" + id + "/8080/")
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if body = strings.TrimSpace(string(b)); resp.StatusCode == http.StatusOK && body == "hello-from-the-vm" {
			break
		}
	}
	if body != "hello-from-the-vm" {
		t.Errorf("through the agent's proxy: %q, want the VM's page", body)
	}

	pause := func(hibernate bool) *hostagentv1.Sandbox {
		t.Helper()
		resp, err := cur.client.PauseSandbox(ctx, connect.NewRequest(&hostagentv1.PauseSandboxRequest{SandboxId: id, Hibernate: hibernate}))
		if err != nil {
			t.Fatalf("pause (hibernate %v): %v", hibernate, err)
		}
		return resp.Msg.GetSandbox()
	}
	if sb := pause(false); sb.GetState() != hostagentv1.SandboxState_SANDBOX_STATE_PAUSED || sb.GetHibernated() {
		t.Errorf("after pause: state %v, hibernated %v", sb.GetState(), sb.GetHibernated())
	}
	// A paused sandbox hibernates in place.
	if sb := pause(true); sb.GetState() != hostagentv1.SandboxState_SANDBOX_STATE_PAUSED || !sb.GetHibernated() {
		t.Errorf("after hibernate: state %v, hibernated %v", sb.GetState(), sb.GetHibernated())
	}
	if _, err := cur.client.PauseSandbox(ctx, connect.NewRequest(&hostagentv1.PauseSandboxRequest{SandboxId: id, Hibernate: true})); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Errorf("hibernating twice: %v, want failed_precondition", err)
	}
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	if _, err := execIn(short, envdURL, token, "true"); err == nil {
		t.Error("envd answers while the sandbox is hibernated")
	}
	cancelShort()

	// The agent restarts: the hibernated sandbox is re-adopted as it is,
	// on disk, with no QEMU started for it.
	stop(cur)
	cur = start()
	got, err := cur.m.Get(id)
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if got.State != agent.StatePaused || !got.Hibernated {
		t.Fatalf("after restart: state %v, hibernated %v", got.State, got.Hibernated)
	}
	if out, _ := exec.Command("pgrep", "-f", "roost-"+id).Output(); len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("a qemu runs for the hibernated sandbox after the restart: pid %s", out)
	}
	// The guest's clock stands still on disk; /init after the restore
	// sets it again.
	time.Sleep(3 * time.Second)

	began := time.Now()
	resumed, err := cur.client.ResumeSandbox(ctx, connect.NewRequest(&hostagentv1.ResumeSandboxRequest{SandboxId: id}))
	if err != nil {
		t.Fatalf("resume: %v", err)
	}
	t.Logf("resume of the hibernated sandbox (restore, envd healthy, /init): %v", time.Since(began))
	sb := resumed.Msg.GetSandbox()
	if sb.GetState() != hostagentv1.SandboxState_SANDBOX_STATE_RUNNING || sb.GetHibernated() {
		t.Errorf("after resume: state %v, hibernated %v", sb.GetState(), sb.GetHibernated())
	}
	envdURL = "http://" + sb.GetEnvdAddress()
	if got := strings.TrimSpace(mustExec(ctx, t, envdURL, token, "cat ~/state")); got != "kept" {
		t.Errorf("file after hibernation: %q, want kept", got)
	}
	guest, _ := strconv.ParseInt(strings.TrimSpace(mustExec(ctx, t, envdURL, token, "date +%s")), 10, 64)
	if skew := time.Now().Unix() - guest; skew > 2 || skew < -2 {
		t.Errorf("guest clock off by %d s after the restore", skew)
	}
	if _, err := cur.client.DestroySandbox(ctx, connect.NewRequest(&hostagentv1.DestroySandboxRequest{SandboxId: id})); err != nil {
		t.Fatalf("destroy: %v", err)
	}
}

func testLogger(t *testing.T) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("ROOST_TEST_VERBOSE") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: level}))
}

// execIn runs a shell command through a sandbox's envd.
func execIn(ctx context.Context, envdURL, token, script string) (string, error) {
	c := processconnect.NewProcessClient(http.DefaultClient, envdURL)
	req := connect.NewRequest(&rpc.StartRequest{Process: &rpc.ProcessConfig{Cmd: "/bin/bash", Args: []string{"-c", script}}})
	req.Header().Set("X-Access-Token", token)
	stream, err := c.Start(ctx, req)
	if err != nil {
		return "", err
	}
	var out, errb bytes.Buffer
	code := -1
	for stream.Receive() {
		ev := stream.Msg().GetEvent()
		out.Write(ev.GetData().GetStdout())
		errb.Write(ev.GetData().GetStderr())
		if e := ev.GetEnd(); e != nil {
			code = int(e.GetExitCode())
		}
	}
	if err := stream.Err(); err != nil {
		return "", err
	}
	if code != 0 {
		return "", fmt.Errorf("%q exited %d: %s", script, code, errb.String())
	}
	return out.String(), nil
}

func mustExec(ctx context.Context, t *testing.T, envdURL, token, script string) string {
	t.Helper()
	out, err := execIn(ctx, envdURL, token, script)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
