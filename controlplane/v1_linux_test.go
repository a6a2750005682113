package controlplane_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/controlplane"
	"roost.dev/roost/store"
	"roost.dev/roost/store/storetest"
)

// execResult is the exec answer.
type execResult struct {
	Stdout          string `json:"stdout"`
	Stderr          string `json:"stderr"`
	ExitCode        int    `json:"exitCode"`
	DurationMs      int64  `json:"durationMs"`
	TimedOut        bool   `json:"timedOut"`
	StdoutTruncated bool   `json:"stdoutTruncated"`
	StderrTruncated bool   `json:"stderrTruncated"`
	Status          string `json:"status"`
}

func (e *testenv) exec(t *testing.T, id string, body map[string]any) execResult {
	t.Helper()
	var res execResult
	e.do("POST", "/v1/sandboxes/"+id+"/exec", e.key, body).want(t, http.StatusOK).decode(t, &res)
	return res
}

// raw sends body as is and returns the answer read whole.
func (e *testenv) raw(t *testing.T, method, path, key string, body io.Reader) response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, e.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

const testOutputLimit = 1 << 20

func TestV1(t *testing.T) {
	storetest.Run(t, func(t *testing.T, dbURL string) {
		testV1(t, newTestenvDB(t, controlplane.Config{ExecOutputLimit: testOutputLimit}, dbURL))
	})
}

func testV1(t *testing.T, e *testenv) {
	other, err := e.cp.CreateTeamWithKey(t.Context(), "other")
	if err != nil {
		t.Fatal(err)
	}
	id := e.create(t, map[string]any{"templateID": "base", "timeout": 300}).SandboxID
	execPath := "/v1/sandboxes/" + id + "/exec"

	t.Run("Exec", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			body map[string]any
			want execResult
		}{
			{"cmd", map[string]any{"cmd": "echo out; echo err >&2; exit 3"},
				execResult{Stdout: "out\n", Stderr: "err\n", ExitCode: 3}},
			{"args", map[string]any{"args": []string{"printf", "%s|%s", "a b", "c"}},
				execResult{Stdout: "a b|c"}},
			{"env", map[string]any{"args": []string{"printenv", "GREETING"}, "env": map[string]string{"GREETING": "hi"}},
				execResult{Stdout: "hi\n"}},
			{"cwd", map[string]any{"cmd": "pwd", "cwd": "/tmp"}, execResult{Stdout: "/tmp\n"}},
			{"default user", map[string]any{"args": []string{"id", "-un"}}, execResult{Stdout: "user\n"}},
			{"root", map[string]any{"args": []string{"id", "-un"}, "user": "root"}, execResult{Stdout: "root\n"}},
			{"login shell", map[string]any{"cmd": "echo $HOME", "user": "root"}, execResult{Stdout: "/root\n"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got := e.exec(t, id, tc.body)
				if got.Stdout != tc.want.Stdout || got.Stderr != tc.want.Stderr || got.ExitCode != tc.want.ExitCode ||
					got.TimedOut || got.StdoutTruncated || got.StderrTruncated {
					t.Fatalf("exec %v: got %+v, want %+v", tc.body, got, tc.want)
				}
			})
		}
	})

	t.Run("ExecErrors", func(t *testing.T) {
		for _, body := range []map[string]any{
			{},
			{"cmd": "true", "args": []string{"true"}},
			{"args": []string{""}},
			{"cmd": "true", "timeout": -1},
			{"args": []string{"/no/such/program"}},
			{"cmd": "true", "cwd": "/no/such/dir"},
			{"cmd": "true", "user": "nosuchuser"},
		} {
			e.do("POST", execPath, e.key, body).want(t, http.StatusBadRequest)
		}
		e.raw(t, "POST", execPath, e.key, strings.NewReader("{not json")).want(t, http.StatusBadRequest)
	})

	t.Run("ExecTimeout", func(t *testing.T) {
		got := e.exec(t, id, map[string]any{"cmd": "echo started; exec sleep 30", "timeout": 1})
		// Not a timing assertion: the answer must not wait for sleep.
		if !got.TimedOut || got.ExitCode != -1 || got.Stdout != "started\n" || got.DurationMs >= 30000 {
			t.Fatalf("timed-out exec: %+v", got)
		}
		// envd killed it: no sleep 30 is left.
		if left := e.exec(t, id, map[string]any{"cmd": "pgrep -fx 'sleep 30' || true"}); left.Stdout != "" {
			t.Fatalf("sleep still runs after its deadline: pids %q", left.Stdout)
		}
	})

	t.Run("ExecOutputCap", func(t *testing.T) {
		got := e.exec(t, id, map[string]any{"cmd": "head -c 3000000 /dev/zero | tr '\\0' a; echo tail >&2"})
		if len(got.Stdout) != testOutputLimit || !got.StdoutTruncated || got.Stdout != strings.Repeat("a", testOutputLimit) ||
			got.StderrTruncated || got.Stderr != "tail\n" || got.ExitCode != 0 {
			t.Fatalf("capped exec: %d stdout bytes, truncated %v; stderr %q (truncated %v); exit %d",
				len(got.Stdout), got.StdoutTruncated, got.Stderr, got.StderrTruncated, got.ExitCode)
		}
	})

	t.Run("Files", func(t *testing.T) {
		data := make([]byte, 3<<20+12345)
		rand.Read(data)
		want := sha256.Sum256(data)
		p := "/tmp/v1 files/nested/dir/blob.bin"
		fp := "/v1/sandboxes/" + id + "/files?path=" + url.QueryEscape(p)
		var entry struct{ Path, Name, Type string }
		e.raw(t, "PUT", fp, e.key, bytes.NewReader(data)).want(t, http.StatusOK).decode(t, &entry)
		if entry.Path != p || entry.Name != "blob.bin" || entry.Type != "file" {
			t.Fatalf("upload answer %+v", entry)
		}
		got := e.raw(t, "GET", fp, e.key, nil).want(t, http.StatusOK)
		if sha256.Sum256(got.body) != want || len(got.body) != len(data) {
			t.Fatalf("downloaded %d bytes, sha256 differs from the %d uploaded", len(got.body), len(data))
		}
		// The sandbox sees the same bytes.
		sum := e.exec(t, id, map[string]any{"args": []string{"sha256sum", p}})
		if !strings.HasPrefix(sum.Stdout, hex.EncodeToString(want[:])) {
			t.Fatalf("sha256sum in the sandbox: %q", sum.Stdout)
		}
		// As another user: the default user cannot write under /root.
		e.raw(t, "PUT", "/v1/sandboxes/"+id+"/files?user=root&path=/root/r.txt", e.key, strings.NewReader("r")).want(t, http.StatusOK)
		if got := e.raw(t, "GET", "/v1/sandboxes/"+id+"/files?user=root&path=/root/r.txt", e.key, nil).want(t, http.StatusOK); string(got.body) != "r" {
			t.Fatalf("root file %q", got.body)
		}

		// Listing: one level by default, deeper on request.
		lp := "/v1/sandboxes/" + id + "/files/list?path=" + url.QueryEscape("/tmp/v1 files")
		var entries []struct {
			Name, Path, Type string
			Size             int64
			ModifiedTime     time.Time
		}
		e.raw(t, "GET", lp, e.key, nil).want(t, http.StatusOK).decode(t, &entries)
		if len(entries) != 1 || entries[0].Name != "nested" || entries[0].Type != "dir" || entries[0].ModifiedTime.IsZero() {
			t.Fatalf("list %+v", entries)
		}
		e.raw(t, "GET", lp+"&depth=3", e.key, nil).want(t, http.StatusOK).decode(t, &entries)
		var found bool
		for _, en := range entries {
			found = found || en.Path == p && en.Type == "file" && en.Size == int64(len(data))
		}
		if len(entries) != 3 || !found {
			t.Fatalf("list depth 3 %+v", entries)
		}
		e.raw(t, "GET", "/v1/sandboxes/"+id+"/files/list?path=/no/such/dir", e.key, nil).want(t, http.StatusNotFound)
		e.raw(t, "GET", lp+"&depth=0", e.key, nil).want(t, http.StatusBadRequest)
		e.raw(t, "GET", "/v1/sandboxes/"+id+"/files/list", e.key, nil).want(t, http.StatusBadRequest)

		e.raw(t, "GET", "/v1/sandboxes/"+id+"/files?path=/no/such/file", e.key, nil).want(t, http.StatusNotFound)
		e.raw(t, "GET", "/v1/sandboxes/"+id+"/files", e.key, nil).want(t, http.StatusBadRequest)
		e.raw(t, "PUT", "/v1/sandboxes/"+id+"/files", e.key, strings.NewReader("x")).want(t, http.StatusBadRequest)
	})

	t.Run("Ports", func(t *testing.T) {
		e.exec(t, id, map[string]any{"cmd": "nohup python3 -m http.server 8123 --bind 127.0.0.1 >/dev/null 2>&1 &"})
		type port struct {
			Port      int    `json:"port"`
			Address   string `json:"address"`
			Forwarded bool   `json:"forwarded"`
		}
		var ports []port
		deadline := time.Now().Add(30 * time.Second)
		for {
			e.do("GET", "/v1/sandboxes/"+id+"/ports", e.key, nil).want(t, http.StatusOK).decode(t, &ports)
			found := false
			for _, p := range ports {
				found = found || (p.Port == 8123 && p.Address == "127.0.0.1" && p.Forwarded)
			}
			if found {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("ports never listed 127.0.0.1:8123 as forwarded: %+v", ports)
			}
			time.Sleep(100 * time.Millisecond)
		}
		// Forwarded means reachable through the proxy.
		e.do("GET", "/proxy/"+id+"/8123/", "", nil).want(t, http.StatusOK)
	})

	t.Run("Auth", func(t *testing.T) {
		for _, ep := range []struct{ method, path string }{
			{"POST", execPath},
			{"GET", "/v1/sandboxes/" + id + "/files?path=/etc/hostname"},
			{"PUT", "/v1/sandboxes/" + id + "/files?path=/tmp/x"},
			{"GET", "/v1/sandboxes/" + id + "/ports"},
		} {
			body := func() io.Reader { return strings.NewReader(`{"cmd":"true"}`) }
			e.raw(t, ep.method, ep.path, "", body()).want(t, http.StatusUnauthorized)
			e.raw(t, ep.method, ep.path, "roost_notakey", body()).want(t, http.StatusUnauthorized)
			e.raw(t, ep.method, ep.path, other, body()).want(t, http.StatusNotFound)
			e.raw(t, ep.method, strings.Replace(ep.path, id, "nosuchsandbox", 1), e.key, body()).want(t, http.StatusNotFound)
		}
		// Nothing ran or was written for the other team.
		if got := e.exec(t, id, map[string]any{"cmd": "test -e /tmp/x && echo exists || true"}); got.Stdout != "" {
			t.Fatalf("another team's upload wrote /tmp/x")
		}
	})

	t.Run("NotRunning", func(t *testing.T) {
		paused := e.create(t, map[string]any{"templateID": "base"}).SandboxID
		e.do("POST", "/sandboxes/"+paused+"/pause", e.key, nil).want(t, http.StatusNoContent)
		lost := e.create(t, map[string]any{"templateID": "base"}).SandboxID
		// Gone from its host too: the reconciler recovers a lost sandbox its
		// host still runs.
		if err := e.agent.Destroy(t.Context(), lost); err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.UpdateSandbox(t.Context(), lost, func(cur *store.Sandbox) error {
			cur.State = store.SandboxLost
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			id     string
			status int
		}{{paused, http.StatusConflict}, {lost, http.StatusBadGateway}} {
			e.do("POST", "/v1/sandboxes/"+tc.id+"/exec", e.key, map[string]any{"cmd": "true"}).want(t, tc.status)
			e.raw(t, "GET", "/v1/sandboxes/"+tc.id+"/files?path=/etc/hostname", e.key, nil).want(t, tc.status)
			e.raw(t, "PUT", "/v1/sandboxes/"+tc.id+"/files?path=/tmp/y", e.key, strings.NewReader("y")).want(t, tc.status)
			e.raw(t, "GET", "/v1/sandboxes/"+tc.id+"/ports", e.key, nil).want(t, tc.status)
			// The proxy answers both 502: E2B's SDKs read that as "not
			// running" (proxy/doc.go).
			e.do("GET", "/proxy/"+tc.id+"/49983/health", "", nil).want(t, http.StatusBadGateway)
		}
		for _, sb := range []string{paused, lost} {
			e.do("DELETE", "/sandboxes/"+sb, e.key, nil).want(t, http.StatusNoContent)
		}
	})

	e.do("DELETE", "/sandboxes/"+id, e.key, nil).want(t, http.StatusNoContent)
}

// TestExecAfterRefusals runs commands between refused ones, through the
// whole path (control plane → agent proxy → envd), many times: refused
// streams once left a broken pooled connection in the agent's proxy that a
// later command picked up.
func TestExecAfterRefusals(t *testing.T) {
	e := newTestenv(t, controlplane.Config{})
	id := e.create(t, map[string]any{"templateID": "base", "timeout": 300}).SandboxID
	execPath := "/v1/sandboxes/" + id + "/exec"
	for i := range 150 {
		e.do("POST", execPath, e.key, map[string]any{"cmd": "true", "cwd": "/no/such/dir"}).want(t, http.StatusBadRequest)
		e.do("POST", execPath, e.key, map[string]any{"args": []string{"/no/such/program"}}).want(t, http.StatusBadRequest)
		if got := e.exec(t, id, map[string]any{"cmd": "echo started"}); got.Stdout != "started\n" {
			t.Fatalf("iteration %d: %+v", i, got)
		}
	}
}
