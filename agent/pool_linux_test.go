package agent_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"roost.dev/roost/agent"
	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
	"roost.dev/roost/runtime"
	"roost.dev/roost/template"
	"roost.dev/roost/template/content"
	"roost.dev/roost/template/templatetest"
)

// withPool configures an agent with a warm pool of size n for base.
func withPool(n int) func(*agent.Config) {
	return func(c *agent.Config) { c.WarmPools = map[string]int{template.BaseName: n} }
}

// waitPool waits until the pool of the default shape of base holds n
// warm sandboxes.
func waitPool(t *testing.T, m *agent.Manager, n int) agent.PoolStat {
	t.Helper()
	return waitPoolOf(t, m, template.BaseName, n)
}

// waitPoolOf is waitPool for the template creates name as name.
func waitPoolOf(t *testing.T, m *agent.Manager, name string, n int) agent.PoolStat {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		stats, _, _ := m.PoolStats()
		for _, s := range stats {
			if s.Template == name && s.Ready >= n && s.Limits.MemoryMB == agent.DefaultMemoryMB {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("warm pool did not reach %d sandboxes: %+v", n, stats)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// identityProbe is what a sandbox shows of itself from the inside: every
// line a user could tell two sandboxes apart by, but their own ID and
// address and what changes from moment to moment.
const identityProbe = `
echo "hostname $(hostname) $(cat /etc/hostname)"; grep 127.0.1.1 /etc/hosts
env | grep -v -E '^(PWD|SHLVL|_)=' | sort
id; umask; pwd; ulimit -a
ls -la / | awk '{print $1, $3, $4, $9}'
ps -eo user,args --no-headers | grep -v -E 'ps -eo|awk|grep|sort|bash -c' | sort
ip -o addr | awk '{print $2, $3, $4}'; ip route
cat /proc/self/cgroup; grep -E '^(Cap|Seccomp|NoNewPrivs|Uid|Gid)' /proc/self/status
awk '{print $5, $9}' /proc/self/mountinfo | sort
cat /etc/resolv.conf; ls -a /tmp ~
`

// normalized is out with the sandbox's own names and address replaced.
func normalized(out string, sb agent.Sandbox, runtimeID string) string {
	out = strings.ReplaceAll(out, sb.ID, "ID")
	if runtimeID != "" {
		out = strings.ReplaceAll(out, runtimeID, "ID")
	}
	out = regexp.MustCompile(`\b\d+\.\d+\.\d+\.\d+\b`).ReplaceAllString(out, "ADDR")
	// A link-local IPv6 address comes from the interface's random MAC.
	out = regexp.MustCompile(`fe80::[0-9a-f:]+`).ReplaceAllString(out, "fe80::MAC")
	return strings.TrimSpace(out)
}

// TestWarmPool: a create of a pooled template claims a sandbox started
// ahead of it, which is then indistinguishable from one started for the
// create; the pool refills, grows with demand, and goes when the agent
// stops.
func TestWarmPool(t *testing.T) {
	h := newHost(t)
	a := h.startWithConfig(templatetest.Store(t), withPool(2))
	m := a.m
	ctx := ctxT(t)
	hostname, _ := os.Hostname()
	t.Cleanup(func() {
		if now, _ := os.Hostname(); now != hostname {
			t.Errorf("the host's hostname changed from %q to %q", hostname, now)
		}
	})
	req := func(id, token string) agent.CreateRequest {
		return agent.CreateRequest{
			ID: id, Template: template.BaseName, EnvVars: map[string]string{"GREETING": "hello"},
			Metadata: map[string]string{"who": "test"}, EnvdToken: token, Timeout: time.Minute,
		}
	}
	fresh, err := m.Create(ctx, req(testID("fresh-"), "token-fresh"))
	if err != nil {
		t.Fatal(err)
	}
	if _, hits, misses := m.PoolStats(); hits != 0 || misses != 1 {
		t.Fatalf("first create: %d hits, %d misses; want 0 and 1", hits, misses)
	}
	waitPool(t, m, 2)
	begin := time.Now()
	warm, err := m.Create(ctx, req(testID("warm-"), "token-warm"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("claimed a warm sandbox in %v", time.Since(begin))
	if _, hits, _ := m.PoolStats(); hits != 1 {
		t.Fatalf("second create: %d hits, want 1", hits)
	}
	runtimeID := warmRuntimeID(t, h, warm.ID)

	t.Run("Indistinguishable", func(t *testing.T) {
		f := normalized(mustExec(t, fresh.Envd.String(), "token-fresh", identityProbe), fresh, "")
		w := normalized(mustExec(t, warm.Envd.String(), "token-warm", identityProbe), warm, runtimeID)
		if f != w {
			t.Errorf("a warm sandbox differs from a fresh one.\nfresh:\n%s\nwarm:\n%s", f, w)
		}
		if !strings.Contains(w, "hostname ID ID") || !strings.Contains(w, "GREETING=hello") {
			t.Errorf("the warm sandbox lacks its identity:\n%s", w)
		}
		if warm.Metadata["who"] != "test" || !warm.Internet {
			t.Errorf("warm sandbox's record: %+v", warm)
		}
	})
	t.Run("TokenRequired", func(t *testing.T) {
		_, _, err := execIn(ctx, warm.Envd.String(), "", "true")
		wantCode(t, "exec without the token", err, connect.CodeUnauthenticated)
	})
	t.Run("NotListed", func(t *testing.T) {
		if got := len(m.List()); got != 2 {
			t.Errorf("List: %d sandboxes, want the 2 created (warm ones are not listed)", got)
		}
	})
	t.Run("InternetOff", func(t *testing.T) {
		waitPool(t, m, 1)
		r := req(testID("offline-"), "")
		r.DenyInternet = true
		sb, err := m.Create(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		if sb.Internet {
			t.Errorf("created with internet denied, the sandbox has it: %+v", sb)
		}
		if err := m.Destroy(ctx, sb.ID); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("GrowsWithDemand", func(t *testing.T) {
		var ids []string
		for i := range 6 {
			sb, err := m.Create(ctx, req(testID("burst-"), ""))
			if err != nil {
				t.Fatalf("create %d: %v", i, err)
			}
			ids = append(ids, sb.ID)
		}
		if s := waitPool(t, m, 6); s.Target < 6 {
			t.Errorf("after 6 creates, the pool aims at %d sandboxes, want at least 6", s.Target)
		}
		for _, id := range ids {
			if err := m.Destroy(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
	})
	for _, id := range []string{fresh.ID, warm.ID} {
		if err := m.Destroy(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	a.stop()
	h.current = nil
	if left, _ := os.ReadDir(filepath.Join(h.dataDir, "sandboxes")); len(left) != 0 {
		t.Errorf("the stopped agent left %d sandboxes behind (warm ones go with it)", len(left))
	}
}

// warmRuntimeID is the ID the runtime knows a claimed sandbox by: the
// name of its state directory.
func warmRuntimeID(t *testing.T, h *host, id string) string {
	t.Helper()
	dirs, err := os.ReadDir(filepath.Join(h.dataDir, "sandboxes"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(h.dataDir, "sandboxes", d.Name(), "sandbox.json"))
		if err == nil && strings.Contains(string(b), `"id": "`+id+`"`) {
			if d.Name() == id {
				t.Fatalf("sandbox %s was not claimed from the pool: its directory has its name", id)
			}
			return d.Name()
		}
	}
	t.Fatalf("no state directory records sandbox %s", id)
	return ""
}

// TestWarmPoolGivesSlots: on a host with no network slot left, a create
// that no warm sandbox serves takes the slot of one.
func TestWarmPoolGivesSlots(t *testing.T) {
	h := newHost(t)
	h.slotHi = h.slotLo + 3
	a := h.startWithConfig(templatetest.Store(t), withPool(2))
	ctx := ctxT(t)
	first, err := a.m.Create(ctx, agent.CreateRequest{Template: template.BaseName})
	if err != nil {
		t.Fatal(err)
	}
	waitPool(t, a.m, 2) // the host is full: one sandbox, two warm
	other, err := a.m.Create(ctx, agent.CreateRequest{Template: template.BaseName, Limits: runtime.Limits{MemoryMB: 256}})
	if err != nil {
		t.Fatalf("a create of another shape on a host full of warm sandboxes: %v", err)
	}
	for _, sb := range []agent.Sandbox{first, other} {
		if !sb.Envd.IsValid() || sb.Envd.Addr() == (netip.Addr{}) {
			t.Errorf("sandbox %s has no address", sb.ID)
		}
	}
}

// TestWarmPoolKill9: an agent killed with SIGKILL leaves a claimed
// sandbox and warm ones behind; the next agent re-adopts the claimed one
// under its ID and removes the warm ones, which have no identity to give
// back.
func TestWarmPoolKill9(t *testing.T) {
	h := newHost(t)
	client := startHelperAgent(t, h, map[string]int{template.BaseName: 2})
	ctx := ctxT(t)
	create := func(id string) string {
		created, err := client.CreateSandbox(ctx, connect.NewRequest(&hostagentv1.CreateSandboxRequest{
			SandboxId: id, EnvdAccessToken: "token-" + id, TimeoutSeconds: 600,
		}))
		if err != nil {
			t.Fatalf("create %s: %v", id, err)
		}
		return created.Msg.GetSandbox().GetEnvdAddress()
	}
	cold, warm := testID("cold-"), testID("warm-")
	create(cold)
	stateDirs := func() []os.DirEntry {
		dirs, _ := os.ReadDir(filepath.Join(h.dataDir, "sandboxes"))
		return dirs
	}
	for deadline := time.Now().Add(time.Minute); len(stateDirs()) < 3; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the pool did not fill: %d state directories", len(stateDirs()))
		}
	}
	time.Sleep(200 * time.Millisecond) // the fills' records written
	envd := create(warm)
	runtimeID := warmRuntimeID(t, h, warm)
	mustExec(t, envd, "token-"+warm, "echo kept > ~/file")
	client.kill()

	b := h.start()
	var ids []string
	for _, s := range b.m.List() {
		ids = append(ids, s.ID)
	}
	slices.Sort(ids)
	if want := []string{cold, warm}; !slices.Equal(ids, want) {
		t.Fatalf("re-adopted %v, want %v", ids, want)
	}
	if out := mustExec(t, envd, "token-"+warm, "cat ~/file; hostname"); out != "kept\n"+warm+"\n" {
		t.Errorf("claimed sandbox after re-adoption says %q", out)
	}
	if n := len(stateDirs()); n != 2 {
		t.Errorf("%d state directories after recovery, want the 2 sandboxes' (warm ones removed)", n)
	}
	if err := b.m.Destroy(ctx, warm); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(h.dataDir, "sandboxes", runtimeID)); !os.IsNotExist(err) {
		t.Errorf("the claimed sandbox's state directory is left after its destroy: %v", err)
	}
}

// TestWarmPoolNewVersion: a create of a new version of a pooled
// template (a rebuild: another digest) drains the old version's pool and
// fills one of the new.
func TestWarmPoolNewVersion(t *testing.T) {
	h := newHost(t)
	cp := newBlobServer(t, content.NewBlobs(t.TempDir()))
	version := func(v string) *agent.TemplateRef {
		man, d := baseManifest(t, h.base, cp.blobs, content.Config{
			User: h.base.DefaultUser, Workdir: h.base.Workdir, Env: map[string]string{"VERSION": v}, Source: "v" + v,
		})
		return &agent.TemplateRef{Digest: d, Manifest: man}
	}
	v1, v2 := version("1"), version("2")
	a := h.startWithConfig(template.NewStore(t.TempDir(), nil), func(c *agent.Config) {
		c.Blobs, c.BlobSource = content.NewBlobs(filepath.Join(h.dataDir, "blobs")), cp.source()
		c.WarmPools = map[string]int{"my-app": 2}
	})
	ctx := ctxT(t)
	create := func(ref *agent.TemplateRef) agent.Sandbox {
		sb, err := a.m.Create(ctx, agent.CreateRequest{Template: "my-app", TemplateRef: ref, EnvdToken: "tok"})
		if err != nil {
			t.Fatal(err)
		}
		return sb
	}
	create(v1)
	waitPoolOf(t, a.m, "my-app", 2)
	create(v2) // cold: the first of its version
	stats, _, _ := a.m.PoolStats()
	if len(stats) != 1 {
		t.Fatalf("pools after the new version's first create: %+v, want only the new version's", stats)
	}
	waitPoolOf(t, a.m, "my-app", 2)
	sb := create(v2)
	if _, hits, _ := a.m.PoolStats(); hits != 1 {
		t.Errorf("%d creates served by the pools, want 1 (the second of version 2)", hits)
	}
	if out := mustExec(t, sb.Envd.String(), "tok", "echo $VERSION"); out != "2\n" {
		t.Errorf("a warm sandbox of version 2 says VERSION=%q", out)
	}
}
