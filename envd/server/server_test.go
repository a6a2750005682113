package server_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/user"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"roost.dev/roost/envd/auth"
	"roost.dev/roost/envd/server"
	"roost.dev/roost/gen/filesystem"
	"roost.dev/roost/gen/filesystem/filesystemconnect"
	rpc "roost.dev/roost/gen/process"
	"roost.dev/roost/gen/process/processconnect"
	"roost.dev/roost/wire"
)

// start runs a real envd on a loopback port until the test ends.
func start(t *testing.T) string {
	t.Helper()
	srv, err := server.New(server.Config{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeListener(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

func do(t *testing.T, method, url, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set(auth.TokenHeader, token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHealthInitEnvsMetrics(t *testing.T) {
	base := start(t)
	if code, _ := do(t, "GET", base+"/health", "", ""); code != http.StatusNoContent {
		t.Fatalf("health: %d", code)
	}
	if code, body := do(t, "POST", base+"/init", "", `{"envVars":{"ROOST_X":"1"},"defaultWorkdir":"/tmp"}`); code != http.StatusNoContent {
		t.Fatalf("init: %d %s", code, body)
	}
	code, body := do(t, "GET", base+"/envs", "", "")
	var envs map[string]string
	if code != 200 || json.Unmarshal([]byte(body), &envs) != nil || envs["ROOST_X"] != "1" {
		t.Fatalf("envs: %d %s", code, body)
	}
	code, body = do(t, "GET", base+"/metrics", "", "")
	var m map[string]any
	if code != 200 || json.Unmarshal([]byte(body), &m) != nil {
		t.Fatalf("metrics: %d %s", code, body)
	}
	for _, k := range []string{"ts", "cpu_count", "cpu_used_pct", "mem_total", "mem_used", "disk_used", "disk_total"} {
		if _, ok := m[k]; !ok {
			t.Errorf("metrics lacks %s: %s", k, body)
		}
	}
	if code, _ := do(t, "GET", base+"/ports", "", ""); code != 200 {
		t.Errorf("ports: %d", code)
	}
	// The default workdir from /init is where processes start.
	c := processconnect.NewProcessClient(http.DefaultClient, base, connect.WithProtoJSON())
	stream, err := c.Start(context.Background(), connect.NewRequest(&rpc.StartRequest{Process: &rpc.ProcessConfig{Cmd: "pwd"}}))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for stream.Receive() {
		out.Write(stream.Msg().GetEvent().GetData().GetStdout())
	}
	if out.String() != "/tmp\n" {
		t.Errorf("pwd %q", out.String())
	}
}

func TestBadInit(t *testing.T) {
	base := start(t)
	// The machine's identity is a guest's envd's to set, never a host's.
	for _, body := range []string{`{`, `{"defaultUser":"no-such-user-roost"}`, `[]`,
		`{"hostname":"sb-1"}`, `{"entropy":"AAAAAAAAAAAAAAAAAAAAAA=="}`} {
		if code, resp := do(t, "POST", base+"/init", "", body); code != http.StatusBadRequest || !strings.Contains(resp, `"code":400`) {
			t.Errorf("init %s: %d %s", body, code, resp)
		}
	}
}

func TestAccessToken(t *testing.T) {
	base := start(t)
	const token = "s3cret"
	if code, _ := do(t, "POST", base+"/init", "", `{"accessToken":"`+token+`"}`); code != http.StatusNoContent {
		t.Fatal("init failed")
	}
	if code, _ := do(t, "GET", base+"/health", "", ""); code != http.StatusNoContent {
		t.Errorf("health needs no token, got %d", code)
	}
	for _, path := range []string{"/envs", "/metrics", "/ports", "/files?path=/etc/hostname"} {
		if code, _ := do(t, "GET", base+path, "", ""); code != http.StatusUnauthorized {
			t.Errorf("%s without token: %d", path, code)
		}
		if code, _ := do(t, "GET", base+path, "wrong", ""); code != http.StatusUnauthorized {
			t.Errorf("%s with a wrong token: %d", path, code)
		}
		if code, _ := do(t, "GET", base+path, token, ""); code != http.StatusOK {
			t.Errorf("%s with token: %d", path, code)
		}
	}
	// /init itself is protected once a token is set.
	if code, _ := do(t, "POST", base+"/init", "", `{"accessToken":"stolen"}`); code != http.StatusUnauthorized {
		t.Errorf("re-init without token: %d", code)
	}
	// Connect RPCs need it too.
	fs := filesystemconnect.NewFilesystemClient(http.DefaultClient, base)
	_, err := fs.Stat(context.Background(), connect.NewRequest(&filesystem.StatRequest{Path: "/"}))
	if connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("Stat without token: %v", err)
	}
	req := connect.NewRequest(&filesystem.StatRequest{Path: "/"})
	req.Header().Set(auth.TokenHeader, token)
	if _, err := fs.Stat(context.Background(), req); err != nil {
		t.Errorf("Stat with token: %v", err)
	}
	// /files accepts a v1 signature instead, for URLs handed to browsers.
	me, _ := user.Current()
	sig := wire.FileSignature("/etc/hostname", "read", me.Username, token, "")
	if code, _ := do(t, "GET", base+"/files?path=/etc/hostname&username="+me.Username+"&signature="+url.QueryEscape(sig), "", ""); code != http.StatusOK {
		t.Errorf("signed read: %d", code)
	}
	exp := time.Now().Add(-time.Minute).Unix()
	expired := wire.FileSignature("/etc/hostname", "read", "", token, itoa(exp))
	if code, _ := do(t, "GET", base+"/files?path=/etc/hostname&signature="+expired+"&signature_expiration="+itoa(exp), "", ""); code != http.StatusUnauthorized {
		t.Errorf("expired signature: %d", code)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// Clients may speak HTTP/2 without TLS (h2c), as Connect clients often do.
func TestH2C(t *testing.T) {
	base := start(t)
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	client := &http.Client{Transport: &http.Transport{Protocols: protocols, TLSClientConfig: &tls.Config{}}}
	resp, err := client.Get(base + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("proto %s status %d", resp.Proto, resp.StatusCode)
	}
	c := processconnect.NewProcessClient(client, base)
	if _, err := c.List(context.Background(), connect.NewRequest(&rpc.ListRequest{})); err != nil {
		t.Fatal(err)
	}
}

// TestLocalEnvs: with LocalEnvs, processes in the sandbox (loopback) read
// GET /envs without the token; other callers, and other routes, still
// need it.
func TestLocalEnvs(t *testing.T) {
	srv, err := server.New(server.Config{LocalEnvs: true}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	serve := func(method, path, from, token, body string) int {
		r := httptest.NewRequest(method, path, strings.NewReader(body))
		r.RemoteAddr = from
		if token != "" {
			r.Header.Set("X-Access-Token", token)
		}
		w := httptest.NewRecorder()
		srv.Handler().ServeHTTP(w, r)
		return w.Code
	}
	if code := serve("POST", "/init", "127.0.0.1:1", "", `{"accessToken":"s3cret","envVars":{"A":"1"}}`); code != http.StatusNoContent {
		t.Fatalf("init: %d", code)
	}
	for _, tc := range []struct {
		method, path, from, token string
		want                      int
	}{
		{"GET", "/envs", "127.0.0.1:40000", "", http.StatusOK},
		{"GET", "/envs", "[::1]:40000", "", http.StatusOK},
		{"GET", "/envs", "10.11.0.1:40000", "", http.StatusUnauthorized},
		{"GET", "/envs", "127.0.0.1:40000", "wrong", http.StatusUnauthorized},
		{"GET", "/metrics", "127.0.0.1:40000", "", http.StatusUnauthorized},
		{"POST", "/init", "127.0.0.1:40000", "", http.StatusUnauthorized},
	} {
		if code := serve(tc.method, tc.path, tc.from, tc.token, "{}"); code != tc.want {
			t.Errorf("%s %s from %s (token %q): %d, want %d", tc.method, tc.path, tc.from, tc.token, code, tc.want)
		}
	}
}
