package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
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
	"roost.dev/roost/store"
	"roost.dev/roost/template/templatetest"
	"roost.dev/roost/tlscert"
)

// link is a `roost server` and one registered `roost agent`, real
// processes, for the attacks on the agent link.
type link struct {
	bin, work, serverDir, api, key string
	agentAddr, agentDir            string
	agent                          *proc
	reg                            agent.Registration
}

// startLink starts a control plane and one agent registered with it.
func startLink(t *testing.T) *link {
	t.Helper()
	if testing.Short() {
		t.Skip("a server, an agent and a sandbox")
	}
	if os.Geteuid() != 0 {
		t.Skip("agent link: sandboxes need root")
	}
	templatetest.Base(t)
	l := &link{bin: buildBinaries(t), key: "roost_test_link_0123456789abcdef"}
	work, err := os.MkdirTemp("", "roost-link.")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeAll(t, work) })
	srv := startServer(t, work, l.bin, l.key, "--reconcile-interval", "1s")
	l.work, l.serverDir, l.api = work, srv.dir, srv.api
	l.agentDir, l.agentAddr = filepath.Join(work, "agent"), freeAddr(t)
	if err := os.MkdirAll(l.agentDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(templatetest.CacheDir(), "templates"), filepath.Join(l.agentDir, "templates")); err != nil {
		t.Fatal(err)
	}
	tok := l.token(t)
	l.agent = start(t, work, "agent", nil, l.bin, "agent", "--data-dir", l.agentDir, "--listen", l.agentAddr, "--no-prune",
		"--server", l.api, "--registration-token", tok)
	l.reg = waitRegistered(t, l.agent, l.agentDir)
	waitListening(t, l.agent, l.agentAddr)
	return l
}

// token makes a registration token with roost server token.
func (l *link) token(t *testing.T) string {
	t.Helper()
	out, err := runCmd(l.bin, "server", "token", "--data-dir", l.serverDir, "--ttl", "5m")
	if err != nil {
		t.Fatalf("roost server token: %v", err)
	}
	tok := strings.TrimSpace(out)
	if !strings.HasPrefix(tok, "roostreg_") || !strings.Contains(tok, "."+tlscert.FingerprintPrefix) {
		t.Fatalf("roost server token printed %q, want roostreg_SECRET.sha256:HEX", tok)
	}
	return tok
}

// controlPlaneTLS is the control plane's client TLS configuration, made
// from the cluster CA in its database, as a replica would.
func controlPlaneTLS(t *testing.T, serverDir string) *tls.Config {
	t.Helper()
	return controlPlaneTLSOf(t, "sqlite://"+filepath.Join(serverDir, "db", "roost.db"))
}

// controlPlaneTLSOf is controlPlaneTLS for the database at dbURL.
func controlPlaneTLSOf(t *testing.T, dbURL string) *tls.Config {
	t.Helper()
	st, err := store.Open(t.Context(), dbURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c, k, err := st.EnsureClusterCA(t.Context(), []byte("unused"), []byte("unused"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := tlscert.ParseClusterCA(c, k)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ca.ClientTLS(time.Now)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// agentRPCClient is a HostAgentService client over cfg (nil: plain HTTP).
func agentRPCClient(addr string, cfg *tls.Config) hostagentv1connect.HostAgentServiceClient {
	scheme := "http://"
	tr := &http.Transport{}
	if cfg != nil {
		scheme, tr.TLSClientConfig = "https://", cfg
	}
	return hostagentv1connect.NewHostAgentServiceClient(&http.Client{Transport: tr, Timeout: 30 * time.Second}, scheme+addr)
}

// listSandboxes calls ListSandboxes with an optional bearer token.
func listSandboxes(ctx context.Context, c hostagentv1connect.HostAgentServiceClient, bearer string) error {
	req := connect.NewRequest(&hostagentv1.ListSandboxesRequest{})
	if bearer != "" {
		req.Header().Set("Authorization", "Bearer "+bearer)
		req.Header().Set("Roost-Agent-Token", bearer)
	}
	_, err := c.ListSandboxes(ctx, req)
	return err
}

// wantRefusedHandshake asserts err is a failed TLS handshake or a
// connection the agent dropped, never an answer of the agent's service.
func wantRefusedHandshake(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: the agent answered, want the TLS handshake refused", what)
	}
	var ce *connect.Error
	if errors.As(err, &ce) && ce.Code() != connect.CodeUnavailable && ce.Code() != connect.CodeUnknown {
		t.Fatalf("%s: %v: an answer from the agent's service, want the TLS handshake refused", what, err)
	}
	t.Logf("%s: refused: %v", what, err)
}

// legitimateUse creates a sandbox through the control plane (which calls
// the agent over mutual TLS), checks envd answers through the proxy and
// on the agent's /proxy, and destroys it.
func (l *link) legitimateUse(t *testing.T) {
	t.Helper()
	var sb struct {
		ID              string `json:"sandboxID"`
		EnvdAccessToken string `json:"envdAccessToken"`
	}
	apiCall(t, "POST", l.api+"/v2/sandboxes", l.key, `{"templateID":"base","timeout":120}`, http.StatusCreated, &sb)
	wantHealth(t, l.api, sb.ID, sb.EnvdAccessToken)
	apiCall(t, "DELETE", l.api+"/sandboxes/"+sb.ID, l.key, "", http.StatusNoContent, nil)
	if err := listSandboxes(t.Context(), agentRPCClient(l.agentAddr, controlPlaneTLS(t, l.serverDir)), ""); err != nil {
		t.Fatalf("the control plane's certificate: %v", err)
	}
}

// TestAttackAgentRPCWithoutClientCert: a host user or a machine on the
// agent's LAN calls the agent's RPC port without the control plane's
// client certificate (plain HTTP, TLS without a certificate, TLS with a
// certificate of another CA, TLS with the agent's own certificate).
func TestAttackAgentRPCWithoutClientCert(t *testing.T) {
	l := startLink(t)
	ctx := t.Context()
	err := listSandboxes(ctx, agentRPCClient(l.agentAddr, nil), "")
	if err == nil {
		t.Fatal("plain HTTP: the agent answered")
	}
	// What a plain HTTP client reads: nothing of the service.
	if resp, err := http.Get("http://" + l.agentAddr + "/health"); err == nil {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("plain HTTP /health: %s %q, want 400 (client sent HTTP to an HTTPS server)", resp.Status, b)
		}
	}
	noCert := &tls.Config{RootCAs: controlPlaneTLS(t, l.serverDir).RootCAs}
	wantRefusedHandshake(t, "TLS without a client certificate", listSandboxes(ctx, agentRPCClient(l.agentAddr, noCert), ""))
	insecure := &tls.Config{InsecureSkipVerify: true} // the attacker does not care who the agent is
	wantRefusedHandshake(t, "TLS, not verifying the agent, no certificate", listSandboxes(ctx, agentRPCClient(l.agentAddr, insecure), ""))
	// A control plane of another cluster: a client certificate of its CA.
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
	wantRefusedHandshake(t, "TLS with another CA's control-plane certificate", listSandboxes(ctx, agentRPCClient(l.agentAddr, otherTLS), ""))
	// The agent's own certificate (a stolen agent key, or another agent):
	// same CA, but a server certificate, not the control plane's.
	own, err := tls.X509KeyPair([]byte(l.reg.Certificate), []byte(l.reg.Key))
	if err != nil {
		t.Fatal(err)
	}
	ownTLS := &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{own}}
	wantRefusedHandshake(t, "TLS with an agent's certificate", listSandboxes(ctx, agentRPCClient(l.agentAddr, ownTLS), ""))
	l.legitimateUse(t)
}

// TestAttackStolenAgentToken: an attacker who stole the agent's
// heartbeat token (or forges a bearer token) calls the agent with it but
// without the client certificate.
func TestAttackStolenAgentToken(t *testing.T) {
	l := startLink(t)
	ctx := t.Context()
	insecure := &tls.Config{InsecureSkipVerify: true}
	wantRefusedHandshake(t, "stolen agent token over TLS", listSandboxes(ctx, agentRPCClient(l.agentAddr, insecure), l.reg.Token))
	wantRefusedHandshake(t, "forged bearer token over TLS", listSandboxes(ctx, agentRPCClient(l.agentAddr, insecure), "forged"))
	if err := listSandboxes(ctx, agentRPCClient(l.agentAddr, nil), l.reg.Token); err == nil {
		t.Fatal("stolen agent token over plain HTTP: the agent answered")
	}
	// The proxy endpoint, too.
	req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+l.agentAddr+"/proxy/x/49983/health", nil)
	req.Header.Set("Authorization", "Bearer "+l.reg.Token)
	if resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: insecure}}).Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("stolen agent token on /proxy: %s, want the handshake refused", resp.Status)
	}
	l.legitimateUse(t)
}

// TestAttackReplayRegistrationToken: an attacker who saw an agent's
// registration token replays it to register a host of its own (which
// would then be sent sandboxes), or to take over the agent's host ID.
func TestAttackReplayRegistrationToken(t *testing.T) {
	l := startLink(t)
	out, err := runCmd(l.bin, "server", "token", "--data-dir", l.serverDir, "--ttl", "5m")
	if err != nil {
		t.Fatal(err)
	}
	fresh := strings.TrimSpace(out)
	_, csr, err := tlscert.NewAgentKey()
	if err != nil {
		t.Fatal(err)
	}
	register := func(body string) int {
		resp, err := http.Post(l.api+"/v1/hosts/register", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	body := func(tok, hostID, token string) string {
		return fmt.Sprintf(`{"registrationToken":%q,"url":"https://127.0.0.1:1","csr":%q,"hostID":%q,"token":%q}`,
			tok, csr, hostID, token)
	}
	usedTok := l.usedToken(t)
	if got := register(body(usedTok, "", "")); got != http.StatusUnauthorized {
		t.Errorf("replayed registration token: %d, want 401", got)
	}
	// Taking over the agent's host ID needs its token as well.
	if got := register(body(fresh, l.reg.HostID, "roostagent_forged")); got != http.StatusUnauthorized {
		t.Errorf("fresh token, the agent's host ID, a forged agent token: %d, want 401", got)
	}
	// That attempt did not spend the fresh token; it works once.
	if got := register(body(fresh, "", "")); got != http.StatusCreated {
		t.Errorf("fresh token: %d, want 201", got)
	}
	if got := register(body(fresh, "", "")); got != http.StatusUnauthorized {
		t.Errorf("fresh token replayed: %d, want 401", got)
	}
	l.legitimateUse(t)
}

// usedToken is the registration token the agent registered with (the
// test passed it on the command line).
func (l *link) usedToken(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", l.agent.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Split(string(b), "\x00")
	for i, a := range args {
		if a == "--registration-token" && i+1 < len(args) {
			return args[i+1]
		}
	}
	t.Fatal("agent has no --registration-token")
	return ""
}

// waitListening waits until addr accepts TCP connections.
func waitListening(t *testing.T, p *proc, addr string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("%s: %s does not accept connections: %v", p.name, addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func runCmd(bin string, args ...string) (string, error) {
	out, err := exec.Command(bin, args...).Output()
	return string(out), err
}
