package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"

	"roost.dev/roost/agent"
	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
	"roost.dev/roost/template"
	"roost.dev/roost/template/templatetest"
	"roost.dev/roost/tlscert"
)

// TestCluster runs real processes: `roost server` with SQLite and two
// `roost agent`s that register with it. Sandboxes spread over both hosts;
// after kill -9 of one agent its sandboxes turn "lost" while the other
// host's keep working; the killed agent, restarted without a
// registration token, reuses its stored registration. The agent link is
// mutual TLS: the agents refuse plain HTTP, a forged bearer token without
// a client certificate, and a certificate of another CA.
func TestCluster(t *testing.T) {
	_, bin, work := processTest(t, "a server, two agents and their sandboxes", "roost-cluster.")

	const key = "roost_test_cluster_0123456789abcdef"
	srv := startServer(t, work, bin, key, "--reconcile-interval", "1s", "--down-after", "3")
	serverDir, api := srv.dir, srv.api

	hosts := make([]*testAgent, 2)
	regs := make([]agent.Registration, 2)
	for i := range hosts {
		hosts[i] = startAgent(t, work, bin, fmt.Sprintf("agent%d", i), serverDir, api)
		regs[i] = hosts[i].reg
	}
	if regs[0].HostID == regs[1].HostID {
		t.Fatalf("both agents registered as %s", regs[0].HostID)
	}

	// Four sandboxes: the scheduler puts each on the host with fewer.
	type sandbox struct {
		ID              string `json:"sandboxID"`
		ClientID        string `json:"clientID"`
		EnvdAccessToken string `json:"envdAccessToken"`
	}
	var sandboxes []sandbox
	byHost := map[string][]sandbox{}
	for range 4 {
		var sb sandbox
		created := time.Now()
		apiCall(t, "POST", api+"/v2/sandboxes", key, `{"templateID":"base","timeout":600}`, http.StatusCreated, &sb)
		t.Logf("sandbox %s on %s: created in %v", sb.ID, sb.ClientID, time.Since(created).Round(time.Millisecond))
		sandboxes = append(sandboxes, sb)
		byHost[sb.ClientID] = append(byHost[sb.ClientID], sb)
	}
	t.Cleanup(func() {
		for _, sb := range sandboxes {
			req, _ := http.NewRequest("DELETE", api+"/sandboxes/"+sb.ID, nil)
			req.Header.Set("X-API-Key", key)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}
	})
	if len(byHost[regs[0].HostID]) != 2 || len(byHost[regs[1].HostID]) != 2 {
		t.Fatalf("sandboxes per host: %v, want 2 on each of %s and %s", byHost, regs[0].HostID, regs[1].HostID)
	}
	for _, sb := range sandboxes {
		wantHealth(t, api, sb.ID, sb.EnvdAccessToken)
	}

	// kill -9 the first agent: its sandboxes become lost.
	killed := hosts[0]
	killed.p.kill(t)
	killedAt := time.Now()
	for _, sb := range byHost[regs[0].HostID] {
		for {
			var got struct{ State string }
			apiCall(t, "GET", api+"/sandboxes/"+sb.ID, key, "", http.StatusOK, &got)
			if got.State == "lost" {
				break
			}
			if time.Since(killedAt) > time.Minute {
				t.Fatalf("sandbox %s of the killed host: state %q a minute after the kill, want lost", sb.ID, got.State)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	t.Logf("sandboxes of the killed host lost after %v", time.Since(killedAt).Round(time.Millisecond))
	for _, sb := range byHost[regs[1].HostID] {
		var got struct{ State string }
		apiCall(t, "GET", api+"/sandboxes/"+sb.ID, key, "", http.StatusOK, &got)
		if got.State != "running" {
			t.Errorf("sandbox %s of the live host: state %q, want running", sb.ID, got.State)
		}
		wantHealth(t, api, sb.ID, sb.EnvdAccessToken)
	}

	// Restarted without a registration token, the agent reuses its stored
	// registration; it still has its sandboxes, which are destroyed here.
	killed.p = start(t, work, "agent0-restarted", nil, bin, killed.args...)
	waitListening(t, killed.p, killed.addr)
	if reg := waitRegistered(t, killed.p, killed.dir); reg != regs[0] {
		t.Errorf("registration after restart: %+v, want %+v", reg, regs[0])
	}

	// The link: nothing but the control plane's certificate gets an answer.
	ctx := t.Context()
	if err := listSandboxes(ctx, agentRPCClient(killed.addr, nil), regs[0].Token); err == nil {
		t.Error("plain HTTP with the agent's token: the agent answered")
	}
	insecure := &tls.Config{InsecureSkipVerify: true}
	wantRefusedHandshake(t, "forged bearer token without a certificate", listSandboxes(ctx, agentRPCClient(killed.addr, insecure), "forged"))
	c, k, err := tlscert.NewClusterCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	other, err := tlscert.ParseClusterCA(c, k)
	if err != nil {
		t.Fatal(err)
	}
	otherTLS, err := other.ClientTLS(time.Now)
	if err != nil {
		t.Fatal(err)
	}
	otherTLS.RootCAs, otherTLS.InsecureSkipVerify = nil, true
	wantRefusedHandshake(t, "a certificate of another CA", listSandboxes(ctx, agentRPCClient(killed.addr, otherTLS), ""))
	// The control plane's CA does not vouch for another address: an agent
	// answering at one it did not register is refused by the control plane.
	cpTLS := controlPlaneTLS(t, serverDir)
	wrongName := cpTLS.Clone()
	wrongName.ServerName = "elsewhere.example"
	if err := listSandboxes(ctx, agentRPCClient(killed.addr, wrongName), ""); err == nil {
		t.Error("the agent's certificate was accepted for another name")
	}

	agentRPC := agentRPCClient(killed.addr, cpTLS)
	for _, sb := range byHost[regs[0].HostID] {
		req := connect.NewRequest(&hostagentv1.DestroySandboxRequest{SandboxId: sb.ID})
		if _, err := agentRPC.DestroySandbox(ctx, req); err != nil {
			t.Errorf("destroy sandbox %s on the restarted agent: %v", sb.ID, err)
		}
	}
}

// removeAll removes dir after detaching what is mounted below it (the
// namespace runtime keeps each data dir's template lower layer mounted).
func removeAll(t *testing.T, dir string) {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Error(err)
	}
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], dir+"/") {
			if err := unix.Unmount(f[1], unix.MNT_DETACH); err != nil {
				t.Errorf("unmount %s: %v", f[1], err)
			}
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Error(err)
	}
}

// buildBinaries builds roost, envd and roost-init into a temporary
// directory (beside roost, where the agent and the namespace driver look
// for them) and returns roost's path.
// processTest skips t under -short (why says what it runs) and when not
// root, and returns the base template, the binaries
// (buildBinaries) and a scratch directory named from prefix, removed
// after t.
func processTest(t *testing.T, why, prefix string) (base template.Template, bin, work string) {
	t.Helper()
	if testing.Short() {
		t.Skip(why)
	}
	if os.Geteuid() != 0 {
		t.Skip("sandboxes need root")
	}
	base = templatetest.Base(t) // cached, or built once into the cache
	bin = buildBinaries(t)
	work, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeAll(t, work) })
	return base, bin, work
}

func buildBinaries(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, b := range []struct{ out, pkg string }{{"roost", "."}, {"envd", "roost.dev/roost/cmd/envd"}, {"roost-init", "roost.dev/roost/cmd/roost-init"}} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, b.out), b.pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", b.pkg, err, out)
		}
	}
	return filepath.Join(dir, "roost")
}

// proc is a started roost process; its output goes to a log file that is
// shown when the test fails.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func start(t *testing.T, work, name string, env []string, bin string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(work, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("----- %s log -----\n%s", name, tail(b, 60))
		}
	})
	return p
}

// stop ends the process with SIGTERM, then SIGKILL, and waits for it.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill %s: %v", p.name, err)
	}
	<-p.done
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func tail(b []byte, n int) []byte {
	lines := bytes.Split(b, []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return bytes.Join(lines, []byte("\n"))
}

// freeAddr returns a loopback address with a port free at the moment.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitHTTP waits until url answers.
func waitHTTP(t *testing.T, p *proc, url string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			return
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("%s: %s does not answer: %v", p.name, url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitRegistered waits for the agent's stored registration.
func waitRegistered(t *testing.T, p *proc, dataDir string) agent.Registration {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		reg, err := agent.ReadRegistration(agent.RegistrationPath(dataDir))
		if err == nil {
			return reg
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("%s did not register: %v", p.name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// apiCall makes one REST call and decodes the answer into out.
func apiCall(t *testing.T, method, url, key, body string, want int, out any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-API-Key", key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %s %s, want %d", method, url, resp.Status, b, want)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, url, b, err)
		}
	}
}

// wantHealth checks envd's /health through the control plane's proxy.
func wantHealth(t *testing.T, api, id, token string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), "GET", api+"/proxy/"+id+"/49983/health", nil)
	req.Header.Set("X-Access-Token", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("envd health of %s through the proxy: %v", id, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Errorf("envd health of %s through the proxy: %s, want 204", id, resp.Status)
	}
}

// testServer is a `roost server` process a test started on a free
// address, its data in work/server.
type testServer struct {
	dir, api string
	env      []string // its environment: the API key
	args     []string // what starts it again on the same data and address
	p        *proc
}

// startServer starts `roost server` in work/server, with API key key and
// flags besides its data directory and address, and waits for its health.
func startServer(t *testing.T, work, bin, key string, flags ...string) *testServer {
	t.Helper()
	addr := freeAddr(t)
	s := &testServer{dir: filepath.Join(work, "server"), api: "http://" + addr, env: []string{"ROOST_API_KEY=" + key}}
	s.args = append([]string{"server", "--data-dir", s.dir, "--listen", addr}, flags...)
	s.restart(t, work, bin, "server")
	return s
}

// restart starts the server (again, once it has ended) as name, and waits
// for its health.
func (s *testServer) restart(t *testing.T, work, bin, name string) {
	t.Helper()
	s.p = start(t, work, name, s.env, bin, s.args...)
	waitHTTP(t, s.p, s.api+"/health")
}

// testAgent is a `roost agent` process a test started and registered.
type testAgent struct {
	dir, addr string   // its --data-dir, with the tests' template cache, and --listen
	args      []string // what starts it again on the same data, registered
	p         *proc
	reg       agent.Registration
}

// startAgent starts `roost agent` in work/name on a free address with the
// tests' templates, registered through a fresh token with the server at
// api whose data directory is serverDir, and waits for its registration.
func startAgent(t *testing.T, work, bin, name, serverDir, api string) *testAgent {
	t.Helper()
	a := &testAgent{dir: filepath.Join(work, name), addr: freeAddr(t)}
	if err := os.MkdirAll(a.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(templatetest.CacheDir(), "templates"), filepath.Join(a.dir, "templates")); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "server", "token", "--data-dir", serverDir, "--ttl", "5m").Output()
	if err != nil {
		t.Fatalf("roost server token: %v", err)
	}
	tok := strings.TrimSpace(string(out))
	if !strings.HasPrefix(tok, "roostreg_") {
		t.Fatalf("roost server token printed %q", tok)
	}
	a.args = []string{"agent", "--data-dir", a.dir, "--listen", a.addr, "--no-prune", "--server", api}
	a.p = start(t, work, name, nil, bin, append(a.args, "--registration-token", tok)...)
	a.reg = waitRegistered(t, a.p, a.dir)
	return a
}
