package agent_test

import (
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/agent"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/qemu"
	"roost.dev/roost/runtime/runtimetest"
	"roost.dev/roost/template"
	"roost.dev/roost/template/templatetest"
)

// TestTemplateCaptureQEMU captures a template on the qemu runtime (see
// testTemplateCapture).
func TestTemplateCaptureQEMU(t *testing.T) {
	if testing.Short() {
		t.Skip("boots VMs")
	}
	testTemplateCapture(t, qemuHost(t))
}

// TestTemplateCaptureNamespace captures a template with a start command on
// the namespace runtime (see testTemplateCapture), where a template with
// none gets no capture: its creates start faster than a restore.
func TestTemplateCaptureNamespace(t *testing.T) {
	h := newHost(t)
	a := h.start()
	sb, err := a.m.Create(ctxT(t), agent.CreateRequest{Limits: runtime.Limits{MemoryMB: 256}})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // time for a capture to start, were there one
	if e, _ := os.ReadDir(filepath.Join(h.dataDir, "builds", "sandboxes")); len(e) > 0 {
		t.Errorf("a namespace create of a template with no start command has it captured: %s", e[0].Name())
	}
	if err := a.m.Destroy(ctxT(t), sb.ID); err != nil {
		t.Fatal(err)
	}
	a.stop()
	testTemplateCapture(t, h)
}

// testTemplateCapture runs a template with a start command: the first
// create boots and runs the start command, a capture of the template is
// made once ready, and the next creates fork it: the start command runs on
// from the capture (it ran once, before any sandbox had an identity),
// while each fork has its own hostname, env vars, token, clock and random
// state. An agent restart keeps the capture; a rebuilt template drops it.
func testTemplateCapture(t *testing.T, h *host) {
	store := storeWith(t, h.base, template.Template{Name: "web",
		StartCmd: "date +%s%N > /tmp/started-at; exec python3 -m http.server 8000",
		ReadyCmd: "curl -fs localhost:8000 >/dev/null"},
		// Its start command needs what only a client's create gives.
		template.Template{Name: "needs-env", StartCmd: `[ -n "$NEED" ] && exec sleep 1000`, ReadyCmd: "pgrep -x sleep"})
	a := h.startWith(store)
	captures := filepath.Join(h.dataDir, "snapshots", "ready")

	create := func(name string) (agent.Sandbox, string) {
		t.Helper()
		token := "token-" + name
		began := time.Now()
		sb, err := a.m.Create(ctxT(t), agent.CreateRequest{Template: "web", EnvdToken: token,
			Limits: runtime.Limits{MemoryMB: 256}, EnvVars: map[string]string{"GREETING": name}})
		if err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		t.Logf("create %s: %v", name, time.Since(began))
		return sb, token
	}
	// facts are what a sandbox says of itself, one a line.
	facts := func(sb agent.Sandbox, token string) []string {
		t.Helper()
		out := mustExec(t, sb.Envd.String(), token, `cat /tmp/started-at /proc/sys/kernel/random/boot_id; hostname; cat /etc/hostname; `+
			`echo "$GREETING"; curl -fsS -o /dev/null -w '%{http_code}\n' localhost:8000; date +%s; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' '`)
		f := strings.Split(strings.TrimSpace(out), "\n")
		if len(f) != 8 {
			t.Fatalf("sandbox facts: %q", out)
		}
		return f
	}
	const startedAt, bootID, hostname, etcHostname, greeting, server, clock, random = 0, 1, 2, 3, 4, 5, 6, 7

	booted, bootedToken := create("booted")
	first := facts(booted, bootedToken)
	if first[server] != "200" {
		t.Fatalf("the start command's server after create: %q", first[server])
	}
	key := waitCapture(t, captures)
	t.Logf("capture %s made", key)

	// A use of the template (which the store marks on its metadata's
	// times, for eviction) is not a new template.
	store.Touch("web")
	one, oneToken := create("one")
	two, twoToken := create("two")
	f1, f2 := facts(one, oneToken), facts(two, twoToken)
	if f1[startedAt] != f2[startedAt] || f1[startedAt] == first[startedAt] {
		t.Errorf("start command started at %s and %s (the first sandbox's: %s): want both forks of one capture",
			f1[startedAt], f2[startedAt], first[startedAt])
	}
	// The kernel makes its boot id when it is first read: after the
	// capture, so each fork has its own.
	t.Logf("boot ids: %s, forks %s and %s", first[bootID], f1[bootID], f2[bootID])
	for _, c := range []struct {
		sb agent.Sandbox
		f  []string
		gr string
	}{{one, f1, "one"}, {two, f2, "two"}} {
		if c.f[hostname] != c.sb.ID || c.f[etcHostname] != c.sb.ID {
			t.Errorf("fork %s: hostname %q, /etc/hostname %q", c.sb.ID, c.f[hostname], c.f[etcHostname])
		}
		if c.f[greeting] != c.gr || c.f[server] != "200" {
			t.Errorf("fork %s: GREETING %q, server %q", c.sb.ID, c.f[greeting], c.f[server])
		}
		if guest := parseUnix(t, c.f[clock]); time.Since(guest).Abs() > 5*time.Second {
			t.Errorf("fork %s: clock %v, host's %v", c.sb.ID, guest, time.Now())
		}
	}
	if f1[random] == f2[random] {
		t.Errorf("both forks read %s from /dev/urandom: their random state is the capture's", f1[random])
	}
	// Each fork's envd has its own token.
	if _, _, err := execIn(ctxT(t), one.Envd.String(), twoToken, "true"); err == nil {
		t.Error("fork one's envd took fork two's token")
	}

	// A template whose capture fails is not tried again at each create:
	// its creates boot.
	needs := func() agent.Sandbox {
		t.Helper()
		sb, err := a.m.Create(ctxT(t), agent.CreateRequest{Template: "needs-env", Limits: runtime.Limits{MemoryMB: 256},
			EnvVars: map[string]string{"NEED": "yes"}})
		if err != nil {
			t.Fatalf("create needs-env: %v", err)
		}
		return sb
	}
	n1 := needs()
	// The capture's own sandbox comes and goes.
	internal := filepath.Join(h.dataDir, "builds", "sandboxes")
	waitFor(t, "a capture attempt", func() bool { e, _ := os.ReadDir(internal); return len(e) > 0 })
	waitFor(t, "the capture attempt's end", func() bool { e, _ := os.ReadDir(internal); return len(e) == 0 })
	n2 := needs()
	time.Sleep(time.Second) // time for an attempt to show
	if e, _ := os.ReadDir(internal); len(e) > 0 {
		t.Errorf("a create after a failed capture tries again: %s", e[0].Name())
	}
	if got := captureDirs(captures); len(got) != 1 {
		t.Errorf("captures %v: want web's only", got)
	}
	for _, sb := range []agent.Sandbox{n1, n2} {
		if err := a.m.Destroy(ctxT(t), sb.ID); err != nil {
			t.Fatal(err)
		}
	}

	// The capture outlives its forks and the agent.
	for _, sb := range []agent.Sandbox{booted, one, two} {
		if err := a.m.Destroy(ctxT(t), sb.ID); err != nil {
			t.Fatal(err)
		}
	}
	a.stop()
	a = h.startWith(store)
	again, againToken := create("again")
	if f := facts(again, againToken); f[startedAt] != f1[startedAt] {
		t.Errorf("after an agent restart the create booted (start command at %s, the capture's %s)", f[startedAt], f1[startedAt])
	}
	if err := a.m.Destroy(ctxT(t), again.ID); err != nil {
		t.Fatal(err)
	}

	// A rebuilt template's capture goes at the next start of the agent.
	a.stop()
	meta := filepath.Join(store.Dir(), "web", "template.json")
	b, err := os.ReadFile(meta)
	if err == nil {
		err = os.WriteFile(meta, append(b, '\n'), 0o600)
	}
	if err != nil {
		t.Fatal(err)
	}
	a = h.startWith(store)
	if _, err := os.Stat(filepath.Join(captures, key)); !os.IsNotExist(err) {
		t.Errorf("the rebuilt template's capture is still there: %v", err)
	}
}

// qemuHost is a host whose agents run the qemu runtime.
func qemuHost(t testing.TB) *host {
	t.Helper()
	h := newHost(t)
	guestInit := runtimetest.GuestInit(t)
	h.newRuntime = func(_ string, log *slog.Logger) runtime.Runtime {
		return qemu.New(qemu.Config{DataDir: filepath.Join(templatetest.CacheDir(), "runtime", "qemu"), Init: guestInit}, log)
	}
	if av := h.newRuntime("", slog.New(slog.DiscardHandler)).Probe(t.Context()); !av.Available {
		t.Skipf("qemu runtime unavailable: %s", av.Reason)
	}
	// Under software emulation, with the race detector and the rest of
	// the suite on two cores, a boot has taken more than the default 30 s.
	h.envdTimeout = 2 * time.Minute
	return h
}

// waitCapture waits for a template's capture in dir and returns its key.
func waitCapture(t testing.TB, dir string) string {
	t.Helper()
	waitFor(t, "template capture in "+dir, func() bool { return len(captureDirs(dir)) > 0 })
	return captureDirs(dir)[0]
}

// waitFor polls cond for up to 3 minutes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Minute); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 3 minutes", what)
		}
	}
}

// captureDirs are the captures in dir.
func captureDirs(dir string) []string {
	entries, _ := os.ReadDir(dir)
	var out []string
	for _, e := range entries {
		if e.IsDir() && !strings.Contains(e.Name(), ".tmp-") {
			out = append(out, e.Name())
		}
	}
	return out
}

func parseUnix(t *testing.T, s string) time.Time {
	t.Helper()
	sec, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("not a unix time: %q", s)
	}
	return time.Unix(sec, 0)
}
