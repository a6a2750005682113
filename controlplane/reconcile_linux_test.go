package controlplane_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"roost.dev/roost/agent"
	"roost.dev/roost/controlplane"
	"roost.dev/roost/errdefs"
	"roost.dev/roost/store"
	"roost.dev/roost/store/storetest"
)

// The reconciler's tests: a host partitioned from the control plane by a
// real nftables rule on loopback, sandboxes made on the agent behind the
// control plane's back, and records a crashed control plane would leave.

// partition cuts the control plane off the agent: every TCP segment sent
// to the agent's port on loopback is answered with a reset, so
// connections open and new alike fail at once, while the agent and its
// sandboxes run on. The returned heal (also run at cleanup) lifts it.
func (e *testenv) partition(t *testing.T) (heal func()) {
	t.Helper()
	u, err := url.Parse(e.agentSrv.URL)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.ParseUint(u.Port(), 10, 16)
	if err != nil {
		t.Fatalf("agent port of %s: %v", e.agentSrv.URL, err)
	}
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	// No roost prefix: an agent's prune must not take it for its own.
	table := &nftables.Table{Family: nftables.TableFamilyINet, Name: fmt.Sprintf("partition_test_%d", port)}
	c.AddTable(table)
	out := c.AddChain(&nftables.Chain{Name: "output", Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter})
	lo := make([]byte, unix.IFNAMSIZ)
	copy(lo, "lo")
	c.AddRule(&nftables.Rule{Table: table, Chain: out, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: lo},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, uint16(port))},
		&expr.Reject{Type: unix.NFT_REJECT_TCP_RST},
	}})
	if err := c.Flush(); err != nil {
		t.Fatalf("partition: install nftables table %s: %v", table.Name, err)
	}
	healed := false
	heal = func() {
		if healed {
			return
		}
		healed = true
		c.DelTable(table)
		if err := c.Flush(); err != nil {
			t.Errorf("heal: remove nftables table %s: %v", table.Name, err)
		}
	}
	t.Cleanup(heal)
	return heal
}

// waitGone waits until the agent no longer has the sandbox.
func (e *testenv) waitGone(t *testing.T, id string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := e.agent.Get(id)
		if errors.Is(err, errdefs.ErrNotFound) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent still has sandbox %s a minute on: %v", id, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// wantWorks checks the sandbox runs commands and keeps files.
func (e *testenv) wantWorks(t *testing.T, id string) {
	t.Helper()
	got := e.exec(t, id, map[string]any{"cmd": "echo works > /tmp/works && cat /tmp/works"})
	if got.ExitCode != 0 || strings.TrimSpace(got.Stdout) != "works" {
		t.Fatalf("sandbox %s: exec answered %+v", id, got)
	}
}

// agentCreate makes a sandbox on the agent directly, as a control plane
// that died before recording its outcome would leave it.
func (e *testenv) agentCreate(t *testing.T, id string) {
	t.Helper()
	if _, err := e.agent.Create(t.Context(), agent.CreateRequest{ID: id, Template: "base", Timeout: 10 * time.Minute}); err != nil {
		t.Fatalf("create %s on the agent: %v", id, err)
	}
}

func TestReconcileLostRecovered(t *testing.T) {
	storetest.Run(t, func(t *testing.T, dbURL string) {
		testReconcileLostRecovered(t, newTestenvDB(t, controlplane.Config{ReconcileInterval: 100 * time.Millisecond}, dbURL))
	})
}

// A network blip past the lost threshold: the host's sandboxes turn lost,
// and when it heals they are recovered as the host has them, running or
// paused, with their files, and usable.
func testReconcileLostRecovered(t *testing.T, e *testenv) {
	run := e.create(t, map[string]any{"timeout": 600}).SandboxID
	paused := e.create(t, map[string]any{"timeout": 600}).SandboxID
	e.exec(t, run, map[string]any{"cmd": "echo before > /tmp/before"})
	e.do("POST", "/sandboxes/"+paused+"/pause", e.key, nil).want(t, http.StatusNoContent)

	heal := e.partition(t)
	e.waitState(t, run, "lost")
	e.waitState(t, paused, "lost")
	e.do("GET", "/proxy/"+run+"/49983/health", "", nil).want(t, http.StatusBadGateway)
	if _, err := e.agent.Get(run); err != nil {
		t.Fatalf("the partitioned agent lost %s: %v", run, err)
	}

	heal()
	e.waitState(t, run, "running")
	e.waitState(t, paused, "paused")
	got := e.exec(t, run, map[string]any{"cmd": "cat /tmp/before"})
	if strings.TrimSpace(got.Stdout) != "before" {
		t.Fatalf("recovered sandbox lost its file: %+v", got)
	}
	e.wantWorks(t, run)
	e.do("POST", "/v2/sandboxes/"+paused+"/connect", e.key, map[string]any{"timeout": 60}).want(t, http.StatusCreated)
	e.wantWorks(t, paused)
}

// TestAttackLostSandboxOutlivesDelete: sandboxes (running and paused) are
// deleted while their host is partitioned, hoping they keep running there,
// unreachable and unbilled; once the host is back the reconciler destroys
// them, and a lost sandbox whose host answers is destroyed by the DELETE.
func TestAttackLostSandboxOutlivesDelete(t *testing.T) {
	storetest.Run(t, func(t *testing.T, dbURL string) {
		testAttackLostSandboxOutlivesDelete(t, newTestenvDB(t, controlplane.Config{
			ReconcileInterval: 100 * time.Millisecond, CreateGrace: 2 * time.Second}, dbURL))
	})
}

// Attack: delete sandboxes (running and paused) while their host is
// partitioned, so they keep running there, unreachable and unbilled.
func testAttackLostSandboxOutlivesDelete(t *testing.T, e *testenv) {
	victim := e.create(t, map[string]any{"timeout": 600}).SandboxID
	paused := e.create(t, map[string]any{"timeout": 600}).SandboxID
	kept := e.create(t, map[string]any{"timeout": 600}).SandboxID
	e.do("POST", "/sandboxes/"+paused+"/pause", e.key, nil).want(t, http.StatusNoContent)

	heal := e.partition(t)
	for _, id := range []string{victim, paused, kept} {
		e.waitState(t, id, "lost")
	}
	for _, id := range []string{victim, paused} {
		e.do("DELETE", "/sandboxes/"+id, e.key, nil).want(t, http.StatusNoContent)
		e.do("GET", "/sandboxes/"+id, e.key, nil).want(t, http.StatusNotFound)
		if _, err := e.agent.Get(id); err != nil {
			t.Fatalf("partition let the delete of %s through: %v", id, err)
		}
	}

	heal()
	e.waitGone(t, victim)
	e.waitGone(t, paused)
	e.waitState(t, kept, "running")
	e.wantWorks(t, kept)

	// A lost sandbox whose host answers is destroyed by the delete itself.
	if _, err := e.store.UpdateSandbox(t.Context(), kept, func(cur *store.Sandbox) error {
		cur.State = store.SandboxLost
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	e.do("DELETE", "/sandboxes/"+kept, e.key, nil).want(t, http.StatusNoContent)
	if _, err := e.agent.Get(kept); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("the agent still has %s after its delete: %v", kept, err)
	}
	e.wantWorks(t, e.create(t, nil).SandboxID)
}

// TestAttackOrphanSandboxReaped: sandboxes run on a host with no live
// record in the store (made on the agent directly, running or paused, or
// with a stopped record), or with a live record on another agent's host
// (a stale copy), unbilled and unseen; the reconciler destroys them after
// the grace, and a sandbox with a record keeps working, on this host or
// recorded on another entry of the same agent.
func TestAttackOrphanSandboxReaped(t *testing.T) {
	storetest.Run(t, func(t *testing.T, dbURL string) {
		testAttackOrphanSandboxReaped(t, newTestenvDB(t, controlplane.Config{
			ReconcileInterval: 100 * time.Millisecond, CreateGrace: 2 * time.Second}, dbURL))
	})
}

// Attack: run sandboxes on a host with no live record in the store (made
// on the agent directly, running or paused, or with a stopped record), so
// they run unbilled and unseen.
func testAttackOrphanSandboxReaped(t *testing.T, e *testenv) {
	legit := e.create(t, map[string]any{"timeout": 600}).SandboxID
	e.agentCreate(t, "orphan-running")
	e.agentCreate(t, "orphan-paused")
	if _, err := e.agent.Pause(t.Context(), "orphan-paused"); err != nil {
		t.Fatal(err)
	}
	e.agentCreate(t, "orphan-stopped")
	if err := e.store.CreateSandbox(t.Context(), store.Sandbox{ID: "orphan-stopped", TeamID: e.teamID(t),
		HostID: "host1", TemplateID: "base", State: store.SandboxStopped}); err != nil {
		t.Fatal(err)
	}
	// Live records elsewhere: on another agent's host (a stale copy here,
	// as a move's old copy), and on another entry of this same agent (its
	// address), which keeps its sandbox.
	ctx := t.Context()
	self, err := e.store.GetHost(ctx, "host1")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []store.Host{{ID: "host-elsewhere", URL: "https://127.0.0.1:1"}, {ID: "host1-again", URL: self.URL}} {
		h.Name, h.Runtime, h.State, h.Cordoned = h.ID, self.Runtime, store.HostReady, true
		if err := e.store.UpsertHost(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	for id, host := range map[string]string{"orphan-elsewhere": "host-elsewhere", "kept-same-agent": "host1-again"} {
		e.agentCreate(t, id)
		if err := e.store.CreateSandbox(ctx, store.Sandbox{ID: id, TeamID: e.teamID(t), HostID: host, TemplateID: "base",
			State: store.SandboxRunning}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"orphan-running", "orphan-paused", "orphan-stopped", "orphan-elsewhere"} {
		e.waitGone(t, id)
	}
	if _, err := e.agent.Get("kept-same-agent"); err != nil {
		t.Errorf("the sandbox another entry of its own agent records was reaped: %v", err)
	}
	// The stopped record goes once the create grace has passed since it
	// stopped; its sandbox may have gone before, as an orphan.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		_, err := e.store.LookupSandbox(t.Context(), "orphan-stopped")
		if errors.Is(err, errdefs.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stopped record outlived its sandbox: %v", err)
		}
	}
	if l := e.get(t, legit); l.State != "running" {
		t.Fatalf("a recorded sandbox is %q after the reaping", l.State)
	}
	e.wantWorks(t, legit)
}

func TestReconcileAbandonedCreate(t *testing.T) {
	storetest.Run(t, func(t *testing.T, dbURL string) {
		testReconcileAbandonedCreate(t, newTestenvDB(t, controlplane.Config{
			ReconcileInterval: 100 * time.Millisecond, CreateGrace: time.Hour}, dbURL))
	})
}

// abandonedCreate leaves what a control plane killed mid-create does: a
// starting record created age ago and (onAgent) its sandbox on the
// agent. The sandbox is made first: a record that old whose host lacks
// it would be settled before the agent had it.
func (e *testenv) abandonedCreate(t *testing.T, id string, age time.Duration, onAgent bool) {
	t.Helper()
	if onAgent {
		e.agentCreate(t, id)
	}
	created := time.Now().Add(-age)
	if err := e.store.CreateSandbox(t.Context(), store.Sandbox{ID: id, TeamID: e.teamID(t), HostID: "host1",
		TemplateID: "base", ClientID: "host1", State: store.SandboxStarting, CreatedAt: created, UpdatedAt: created,
		TimeoutSecs: 600, EndAt: time.Now().Add(10 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
}

// A starting record older than the grace is settled: its sandbox
// destroyed on the host, the record deleted (no client was ever answered
// with it); one within the grace is a create in flight and left alone.
func testReconcileAbandonedCreate(t *testing.T, e *testenv) {
	e.abandonedCreate(t, "create-in-flight", 0, true)
	e.abandonedCreate(t, "create-finished", 2*time.Hour, true)
	e.abandonedCreate(t, "create-unwound", 2*time.Hour, false)
	e.waitGone(t, "create-finished")
	for _, id := range []string{"create-finished", "create-unwound"} {
		deadline := time.Now().Add(time.Minute)
		for {
			_, err := e.store.LookupSandbox(t.Context(), id)
			if errors.Is(err, errdefs.ErrNotFound) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the starting record %s is still there a minute on: %v", id, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if sb, err := e.store.LookupSandbox(t.Context(), "create-in-flight"); err != nil || sb.State != store.SandboxStarting {
		t.Fatalf("a create within its grace was touched: %+v, %v", sb, err)
	}
	if _, err := e.agent.Get("create-in-flight"); err != nil {
		t.Fatalf("a create within its grace lost its sandbox: %v", err)
	}
	e.wantWorks(t, e.create(t, nil).SandboxID)
}

// teamID is the team of the testenv's key.
func (e *testenv) teamID(t *testing.T) string {
	t.Helper()
	k, err := e.store.APIKeyByHash(t.Context(), store.HashKey(e.key))
	if err != nil {
		t.Fatal(err)
	}
	return k.TeamID
}

// TestCreateAvoidsUnreachableHost: a host whose agent cannot be reached
// (dead, not yet marked down) is where the scheduler would put the next
// sandbox; the create moves to a host that answers and succeeds, and the
// next creates avoid the dead host.
func TestCreateAvoidsUnreachableHost(t *testing.T) {
	e := newTestenv(t, controlplane.Config{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there any more
	if err := e.store.UpsertHost(t.Context(), store.Host{ID: "a-dead-host", URL: dead, Runtime: "namespace", CPUs: 64,
		MemoryMB: 1 << 20, MaxSandboxes: 100, State: store.HostReady}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		var c created
		e.do("POST", "/v2/sandboxes", e.key, map[string]any{"templateID": "base"}).want(t, http.StatusCreated).decode(t, &c)
		if c.ClientID != "host1" {
			t.Errorf("sandbox %s on %s, want host1", c.SandboxID, c.ClientID)
		}
		var got struct{ ClientID string }
		e.do("GET", "/sandboxes/"+c.SandboxID, e.key, nil).want(t, http.StatusOK).decode(t, &got)
		if got.ClientID != "host1" {
			t.Errorf("stored sandbox %s on %s, want host1", c.SandboxID, got.ClientID)
		}
		e.do("DELETE", "/sandboxes/"+c.SandboxID, e.key, nil).want(t, http.StatusNoContent)
	}
}
