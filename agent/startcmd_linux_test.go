package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"roost.dev/roost/agent"
	"roost.dev/roost/errdefs"
	rpc "roost.dev/roost/gen/process"
	"roost.dev/roost/gen/process/processconnect"
	"roost.dev/roost/template"
)

// storeWith returns a template store holding base's tree, as hard links,
// under each name of tpls, with that template's record: the files stay
// shared (nothing writes to a template's tree), the defaults are the
// test's.
func storeWith(t testing.TB, base template.Template, tpls ...template.Template) *template.Store {
	t.Helper()
	dir := t.TempDir()
	for _, tpl := range tpls {
		if err := os.MkdirAll(filepath.Join(dir, tpl.Name), 0o700); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("cp", "-al", base.RootFS, filepath.Join(dir, tpl.Name, "rootfs")).CombinedOutput(); err != nil {
			t.Fatalf("copy base: %v: %s", err, out)
		}
		tpl.DefaultUser, tpl.Workdir, tpl.Env, tpl.Source = base.DefaultUser, base.Workdir, base.Env, template.SourceImport
		b, err := json.Marshal(tpl)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, tpl.Name, "template.json"), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return template.NewStore(dir, nil)
}

func TestStartAndReadyCommands(t *testing.T) {
	h := newHost(t)
	a := h.startWith(storeWith(t, h.base,
		template.Template{Name: "web", StartCmd: "echo serving in $(pwd) as $(whoami) for $GREETING; python3 -m http.server 8000",
			ReadyCmd: "curl -fs localhost:8000 >/dev/null"},
		template.Template{Name: "crashes", StartCmd: "echo cannot start >&2; exit 3", ReadyCmd: "curl -fs localhost:8000"},
		template.Template{Name: "never-ready", StartCmd: "echo waiting forever; sleep 1000", ReadyCmd: "echo not yet; false"},
		template.Template{Name: "no-ready", StartCmd: "sleep 1000"},
	))

	t.Run("ready before create returns", func(t *testing.T) {
		token := "token-" + testID("")
		began := time.Now()
		sb, err := a.m.Create(ctxT(t), agent.CreateRequest{Template: "web", EnvdToken: token,
			EnvVars: map[string]string{"GREETING": "roost"}})
		if err != nil {
			t.Fatal(err)
		}
		took := time.Since(began)
		envd := sb.Envd.String()
		// The same server's ready time, measured inside the sandbox by a
		// tight loop: what a create cannot be faster than.
		ready := mustExec(t, envd, token, `s=$(date +%s%N); python3 -m http.server 8001 >/dev/null 2>&1 & `+
			`until curl -fs localhost:8001 >/dev/null; do sleep 0.001; done; echo $(( ($(date +%s%N) - s) / 1000000 ))ms; kill %1`)
		t.Logf("create with a start command and a ready check: %s; the server's own ready time: %s", took, strings.TrimSpace(ready))
		// The very first request finds the server up.
		if out := mustExec(t, envd, token, "curl -fsS -o /dev/null -w '%{http_code}' localhost:8000"); out != "200" {
			t.Errorf("server after create: %q", out)
		}
		procs := listProcesses(t, envd, token)
		var found bool
		for _, p := range procs {
			if strings.Contains(strings.Join(p.GetConfig().GetArgs(), " "), "http.server") {
				found = true
				if p.GetConfig().GetCwd() != h.base.Workdir {
					t.Errorf("start command's cwd %q, want %q", p.GetConfig().GetCwd(), h.base.Workdir)
				}
			}
		}
		if !found {
			t.Errorf("start command not in the process list: %v", procs)
		}
		// It keeps running after create returned, as the template's user.
		time.Sleep(200 * time.Millisecond)
		if out := mustExec(t, envd, token, "ps -o user= -C python3"); strings.TrimSpace(out) != h.base.DefaultUser {
			t.Errorf("start command runs as %q, want %q", out, h.base.DefaultUser)
		}
	})

	t.Run("start command exits", func(t *testing.T) {
		_, err := a.m.Create(ctxT(t), agent.CreateRequest{Template: "crashes"})
		if err == nil || !strings.Contains(err.Error(), "cannot start") || !strings.Contains(err.Error(), "code 3") {
			t.Fatalf("create: %v, want the start command's exit and output", err)
		}
		if !errors.Is(err, errdefs.ErrUnavailable) {
			t.Errorf("create: %v, want ErrUnavailable", err)
		}
	})

	t.Run("never ready", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		_, err := a.m.Create(ctx, agent.CreateRequest{Template: "never-ready"})
		if err == nil || !strings.Contains(err.Error(), "waiting forever") || !strings.Contains(err.Error(), "not yet") {
			t.Fatalf("create: %v, want the start command's and the ready command's output", err)
		}
		if !errors.Is(err, errdefs.ErrTimeout) {
			t.Errorf("create: %v, want ErrTimeout", err)
		}
	})

	t.Run("no ready command", func(t *testing.T) {
		sb, err := a.m.Create(ctxT(t), agent.CreateRequest{Template: "no-ready"})
		if err != nil {
			t.Fatal(err)
		}
		// The start command runs (its bash) when create returns; bash -l
		// reads the profile before it runs sleep.
		deadline := time.Now().Add(5 * time.Second)
		out := mustExec(t, sb.Envd.String(), "", "pgrep -c -x sleep || true")
		for ; out != "1\n" && time.Now().Before(deadline); out = mustExec(t, sb.Envd.String(), "", "pgrep -c -x sleep || true") {
			time.Sleep(20 * time.Millisecond)
		}
		if out != "1\n" {
			t.Errorf("start command not running: %q", out)
		}
	})

	if n := len(a.m.List()); n != 2 {
		t.Errorf("%d sandboxes left, want the 2 that were created (failed creates leave none)", n)
	}
}

func listProcesses(t *testing.T, envd, token string) []*rpc.ProcessInfo {
	t.Helper()
	c := processconnect.NewProcessClient(http.DefaultClient, "http://"+envd)
	req := connect.NewRequest(&rpc.ListRequest{})
	if token != "" {
		req.Header().Set("X-Access-Token", token)
	}
	resp, err := c.List(ctxT(t), req)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Msg.GetProcesses()
}
