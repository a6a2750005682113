package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/coder/websocket"

	"roost.dev/roost/agent"
	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
	"roost.dev/roost/store/storetest"
	"roost.dev/roost/template/templatetest"
)

// TestChaos is issue 19's fault test (make test-chaos): three `roost
// server` replicas on one PostgreSQL database and three `roost agent`s,
// each in a network namespace of its own, under a load of creates,
// execs, file writes, proxied requests and kills sent to any replica.
// Faults come one after another: kill -9 of the leader, kill -9 of
// another replica, an agent cut off from everything for a minute, a
// PostgreSQL restart, kill -9 and restart of an agent, and a replica
// stopped gracefully under terminal sessions (which it must close with
// 1001, going away, for their clients to reattach). After each, every sandbox
// kept from the start on a healthy agent still answers with its file and
// process, the agents run nothing the store does not know, and every
// call that failed succeeded on retry. At the end every sandbox is
// deleted and nothing of any is left on the host. It prints a table of
// the faults.
func TestChaos(t *testing.T) {
	if os.Getenv("ROOST_CHAOS") == "" {
		t.Skip("the chaos test runs alone, for minutes: make test-chaos")
	}
	dbURL := storetest.PostgresURL(t)
	_, bin, work := processTest(t, "three replicas, three agents and their sandboxes under faults", "roost-chaos.")
	c := newChaos(t, bin, work, dbURL)
	c.startCluster()
	c.keepSandboxes(6)
	c.startLoad()
	time.Sleep(5 * time.Second)
	c.check("none (load only)", "")

	c.killReplica(true)
	c.killReplica(false)
	c.partitionAgent(0, time.Minute)
	c.restartPostgres()
	c.restartAgent(1)
	c.stopReplicaUnderTerminals()

	c.stopLoad()
	c.cleanUp()
	c.report()
}

// chaos is the test's cluster and its record of the faults.
type chaos struct {
	t             *testing.T
	bin, work, db string
	key, shared   string
	net           *chaosNet
	replicas      []*chaosReplica
	agents        []*chaosAgent
	client        *chaosClient
	kept          []keptSandbox
	rows          []chaosRow
	endLoad       func() // stops the load and waits for its calls
}

type chaosReplica struct {
	name, addr string
	p          *proc
}

func (r *chaosReplica) api() string { return "http://" + r.addr }

type chaosAgent struct {
	i      int
	dir    string
	addr   string
	p      *proc
	reg    agent.Registration
	cutOff bool // partitioned or down: its sandboxes are not checked
}

// keptSandbox is one made at the start, with a file and a process that
// must outlive every fault of a healthy host.
type keptSandbox struct {
	id, host string
	pid      string
}

// chaosRow is a line of the report.
type chaosRow struct {
	fault      string
	failover   string
	failed     int // calls whose first try failed
	calls      int
	p99        time.Duration
	retryFails int
	lost       int
	leaked     int
}

func newChaos(t *testing.T, bin, work, dbURL string) *chaos {
	c := &chaos{t: t, bin: bin, work: work, db: dbURL, key: "roost_test_chaos_0123456789abcdef",
		shared: filepath.Join(work, "server"), net: newChaosNet(t, 3)}
	for i := range 3 {
		c.replicas = append(c.replicas, &chaosReplica{name: fmt.Sprintf("replica%d", i), addr: fmt.Sprintf("%s.1:%d", chaosSubnet, 3100+i)})
	}
	return c
}

func (c *chaos) startCluster() {
	t := c.t
	for _, r := range c.replicas {
		c.startReplica(r)
	}
	var apis []string
	for _, r := range c.replicas {
		apis = append(apis, r.api())
	}
	c.client = newChaosClient(c.key, apis)
	for i, h := range c.net.hosts {
		a := &chaosAgent{i: i, dir: filepath.Join(c.work, fmt.Sprintf("agent%d", i)), addr: h.addr + ":7070"}
		if err := os.MkdirAll(a.dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join(templatetest.CacheDir(), "templates"), filepath.Join(a.dir, "templates")); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(c.bin, "server", "token", "--data-dir", c.shared, "--database-url", c.db, "--ttl", "5m").Output()
		if err != nil {
			t.Fatalf("roost server token: %v", err)
		}
		c.startAgent(a, strings.TrimSpace(string(out)))
		a.reg = waitRegistered(t, a.p, a.dir)
		c.agents = append(c.agents, a)
	}
	c.waitHostsReady()
}

func (c *chaos) startReplica(r *chaosReplica) {
	r.p = start(c.t, c.work, fmt.Sprintf("%s-%d", r.name, time.Now().UnixMilli()), []string{"ROOST_API_KEY=" + c.key}, c.bin, "server",
		"--data-dir", c.shared, "--database-url", c.db, "--listen", r.addr,
		"--reconcile-interval", "1s", "--down-after", "3", "--create-grace", "15s")
	waitHTTP(c.t, r.p, r.api()+"/health")
}

func (c *chaos) startAgent(a *chaosAgent, token string) {
	var servers []string
	for _, r := range c.replicas {
		servers = append(servers, r.api())
	}
	args := []string{"--net=/run/netns/" + c.net.hosts[a.i].netns, "--", c.bin, "agent", "--data-dir", a.dir, "--listen", a.addr,
		"--no-prune", "--server", strings.Join(servers, ",")}
	if token != "" {
		args = append(args, "--registration-token", token)
	}
	a.p = start(c.t, c.work, fmt.Sprintf("agent%d-%d", a.i, time.Now().UnixMilli()), nil, "nsenter", args...)
}

// waitHostsReady waits until every agent not cut off is a ready host.
func (c *chaos) waitHostsReady() {
	t := c.t
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var hosts []struct{ ID, State string }
		err := c.client.once(t.Context(), c.replicas[0].api(), "GET", "/v1/hosts", "", http.StatusOK, &hosts)
		ready := map[string]bool{}
		for _, h := range hosts {
			ready[h.ID] = h.State == "ready"
		}
		all := err == nil
		for _, a := range c.agents {
			all = all && (a.cutOff || ready[a.reg.HostID])
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("hosts not ready: %+v, %v", hosts, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// keepSandboxes makes n sandboxes that live through the test, each with
// a file and a background process.
func (c *chaos) keepSandboxes(n int) {
	t := c.t
	for range n {
		var sb chaosSandbox
		if err := c.client.call(t.Context(), "create", "POST", "/v2/sandboxes", `{"templateID":"base","timeout":3600}`, http.StatusCreated, &sb); err != nil {
			t.Fatal(err)
		}
		if err := c.client.call(t.Context(), "write", "PUT", "/v1/sandboxes/"+sb.ID+"/files?path=/tmp/kept.txt", sb.ID, http.StatusOK, nil); err != nil {
			t.Fatal(err)
		}
		pid, err := c.client.exec(t.Context(), sb.ID, "nohup sleep 100000 >/dev/null 2>&1 & echo $!")
		if err != nil {
			t.Fatal(err)
		}
		c.kept = append(c.kept, keptSandbox{id: sb.ID, host: sb.ClientID, pid: strings.TrimSpace(pid)})
		c.client.saw(sb.ID)
	}
	c.client.take()
}

// cleanUp deletes every sandbox the store holds while the cluster runs
// (an agent that stops leaves its sandboxes running): the kept ones, and
// any of the load's, such as one a create retried on another replica
// made twice. Then no agent may run a sandbox, and nothing of any
// sandbox the test made or saw may be left on the host: no state
// directory, network namespace or cgroup. It is the report's last row.
func (c *chaos) cleanUp() {
	t := c.t
	var sbs []chaosSandbox
	if err := c.client.once(t.Context(), c.client.pick(), "GET", "/v2/sandboxes?state=running,paused&limit=100", "", http.StatusOK, &sbs); err != nil {
		t.Fatalf("list sandboxes: %v", err)
	}
	others := 0
	for _, sb := range sbs {
		c.client.saw(sb.ID)
		if !slices.ContainsFunc(c.kept, func(k keptSandbox) bool { return k.id == sb.ID }) {
			others++
		}
		if err := c.client.call(t.Context(), "kill", "DELETE", "/sandboxes/"+sb.ID, "", http.StatusNoContent, nil); err != nil {
			t.Errorf("delete sandbox %s: %v", sb.ID, err)
		}
	}
	calls := c.client.take()
	const fault = "end: every sandbox deleted"
	row := chaosRow{fault: fault, failover: fmt.Sprintf("%d kept and %d others deleted", len(sbs)-others, others), calls: len(calls)}
	row.failed, _, row.p99 = summary(calls)
	// The agents run what the store holds, which is nothing now.
	row.leaked = c.leaked(fault)
	var dirs []string
	for _, a := range c.agents {
		dirs = append(dirs, a.dir)
	}
	left := waitNoLeftovers(c.client.seenIDs(), dirs...)
	for _, l := range left {
		t.Errorf("%s: left on the host: %s", fault, l)
	}
	row.leaked += len(left)
	c.rows = append(c.rows, row)
	t.Logf("fault %q: %+v", fault, row)
}

func (c *chaos) startLoad() {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { c.client.load(ctx) })
	}
	c.endLoad = func() { cancel(); wg.Wait() }
}

func (c *chaos) stopLoad() { c.endLoad() }

// leader is the replica that leads, waiting up to 10 s for one, and how
// long that took.
func (c *chaos) leader(among []*chaosReplica) (*chaosReplica, time.Duration) {
	begin := time.Now()
	for time.Since(begin) < 10*time.Second {
		for _, r := range among {
			var h struct{ Leader bool }
			if err := c.client.once(c.t.Context(), r.api(), "GET", "/health", "", http.StatusOK, &h); err == nil && h.Leader {
				return r, time.Since(begin)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatal("no replica leads")
	return nil, 0
}

// killReplica kill -9s the leader (or another replica), times the
// failover, and restarts it.
func (c *chaos) killReplica(leader bool) {
	lead, _ := c.leader(c.replicas)
	victim, fault := lead, "kill -9 of the leader"
	if !leader {
		victim = c.replicas[(slices.Index(c.replicas, lead)+1)%len(c.replicas)]
		fault = "kill -9 of a non-leader replica"
	}
	victim.p.kill(c.t)
	others := slices.DeleteFunc(slices.Clone(c.replicas), func(r *chaosReplica) bool { return r == victim })
	_, took := c.leader(others)
	failover := "-"
	if leader {
		failover = took.Round(10 * time.Millisecond).String()
	}
	time.Sleep(5 * time.Second)
	c.startReplica(victim)
	c.check(fault, failover)
}

// partitionAgent cuts agent i off from everything for d, then heals it.
func (c *chaos) partitionAgent(i int, d time.Duration) {
	a := c.agents[i]
	a.cutOff = true
	c.net.partition(c.t, i, true)
	time.Sleep(d)
	c.net.partition(c.t, i, false)
	a.cutOff = false
	c.waitHostsReady()
	c.check(fmt.Sprintf("agent cut off for %v, then healed", d), "")
}

// restartPostgres restarts the local PostgreSQL cluster, and times until
// the API creates sandboxes again.
func (c *chaos) restartPostgres() {
	t := c.t
	versions, _ := os.ReadDir("/etc/postgresql")
	if len(versions) == 0 {
		t.Log("no local PostgreSQL cluster to restart: fault skipped")
		return
	}
	v := versions[len(versions)-1].Name()
	begin := time.Now()
	if out, err := exec.Command("pg_ctlcluster", "--skip-systemctl-redirect", v, "main", "restart").CombinedOutput(); err != nil {
		t.Fatalf("restart PostgreSQL: %v: %s", err, out)
	}
	for {
		var sb chaosSandbox
		err := c.client.once(t.Context(), c.client.pick(), "POST", "/v2/sandboxes", `{"templateID":"base","timeout":60}`, http.StatusCreated, &sb)
		if err == nil {
			_ = c.client.once(t.Context(), c.client.pick(), "DELETE", "/sandboxes/"+sb.ID, "", http.StatusNoContent, nil)
			break
		}
		if time.Since(begin) > time.Minute {
			t.Fatalf("no create a minute after PostgreSQL restarted: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	back := time.Since(begin)
	time.Sleep(3 * time.Second)
	c.check("PostgreSQL restarted", "API back in "+back.Round(10*time.Millisecond).String())
}

// restartAgent kill -9s agent i and starts it again, without a
// registration token.
func (c *chaos) restartAgent(i int) {
	a := c.agents[i]
	a.cutOff = true
	a.p.kill(c.t)
	time.Sleep(5 * time.Second)
	c.startAgent(a, "")
	waitListening(c.t, a.p, a.addr)
	a.cutOff = false
	c.waitHostsReady()
	c.check("kill -9 of an agent, restarted", "")
}

// stopReplicaUnderTerminals opens terminals through one replica, stops
// it gracefully, and reattaches to them through another.
func (c *chaos) stopReplicaUnderTerminals() {
	t := c.t
	victim := c.replicas[0]
	var terms []*chaosTerminal
	for _, k := range c.kept[:2] {
		terms = append(terms, openTerminal(t, victim.api(), c.key, k.id))
	}
	begin := time.Now()
	stopped := make(chan struct{})
	go func() { victim.p.stop(); close(stopped) }()
	var statuses []string
	for _, term := range terms {
		// The replica says it goes away (1001), so that clients
		// reattach elsewhere, rather than dropping the connection.
		status := term.waitClosed(t, 15*time.Second)
		if status != websocket.StatusGoingAway {
			t.Errorf("terminal of %s closed with %s, want 1001 (going away)", term.sandbox, closeName(status))
		}
		statuses = append(statuses, closeName(status))
	}
	closedIn := time.Since(begin)
	<-stopped
	for _, term := range terms {
		term.reattach(t, c.replicas[1].api(), c.key)
	}
	c.startReplica(victim)
	slices.Sort(statuses)
	c.check("graceful stop of a replica under terminals", fmt.Sprintf("terminals closed in %v: %s",
		closedIn.Round(time.Millisecond), strings.Join(slices.Compact(statuses), ", ")))
}

// closeName names a WebSocket close status as the report shows it.
func closeName(s websocket.StatusCode) string {
	switch s {
	case -1:
		return "no close frame (1006)"
	case websocket.StatusGoingAway:
		return "1001 going away"
	}
	return fmt.Sprintf("%d", int(s))
}

// check stops the load and records the fault's row: the calls since the
// last check (the fault and the recovery), the kept sandboxes on healthy
// agents, which must answer with their file and process, and the
// agents, which must run exactly what the store holds for them.
func (c *chaos) check(fault, failover string) {
	t := c.t
	c.stopLoad()
	defer c.startLoad()
	calls := c.client.take()
	row := chaosRow{fault: fault, failover: failover, calls: len(calls)}
	var retryFails []error
	row.failed, retryFails, row.p99 = summary(calls)
	row.retryFails = len(retryFails)
	for _, err := range retryFails {
		t.Errorf("%s: a call failed on retry: %v", fault, err)
	}
	for _, k := range c.kept {
		if c.agentOf(k.host).cutOff {
			continue
		}
		if err := c.keptAnswers(k); err != nil {
			row.lost++
			t.Errorf("%s: kept sandbox %s on %s: %v", fault, k.id, k.host, err)
		}
	}
	row.leaked = c.leaked(fault)
	c.rows = append(c.rows, row)
	t.Logf("fault %q: %+v", fault, row)
}

func (c *chaos) agentOf(hostID string) *chaosAgent {
	for _, a := range c.agents {
		if a.reg.HostID == hostID {
			return a
		}
	}
	c.t.Fatalf("no agent is host %s", hostID)
	return nil
}

// keptAnswers checks a kept sandbox, for up to 20 s: running, its file
// there, its process alive.
func (c *chaos) keptAnswers(k keptSandbox) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := c.client.exec(c.t.Context(), k.id, "kill -0 "+k.pid+" && cat /tmp/kept.txt")
		if err == nil && out == k.id {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("file holds %q", out)
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// leaked waits, up to the create grace and a little, for every healthy
// agent to run exactly the live sandboxes the store holds for it, and
// returns how many it runs beyond them at the end.
func (c *chaos) leaked(fault string) int {
	t := c.t
	tlsConfig := controlPlaneTLSOf(t, c.db)
	deadline := time.Now().Add(30 * time.Second)
	for {
		extra, missing := 0, 0
		var diff []string
		for _, a := range c.agents {
			if a.cutOff {
				continue
			}
			resp, err := agentRPCClient(a.addr, tlsConfig).ListSandboxes(t.Context(), connect.NewRequest(&hostagentv1.ListSandboxesRequest{}))
			if err != nil {
				t.Fatalf("%s: list the sandboxes of agent %d: %v", fault, a.i, err)
			}
			runs := map[string]bool{}
			for _, sb := range resp.Msg.GetSandboxes() {
				runs[sb.GetSandboxId()] = true
				c.client.saw(sb.GetSandboxId())
			}
			held := c.storeHolds(a.reg.HostID)
			for id := range runs {
				if !held[id] {
					extra++
					diff = append(diff, "runs "+id)
				}
			}
			for id := range held {
				if !runs[id] {
					missing++
					diff = append(diff, "store holds "+id)
				}
			}
		}
		if extra == 0 && missing == 0 {
			return 0
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: agents and store disagree: %v", fault, diff)
			return extra
		}
		time.Sleep(time.Second)
	}
}

// storeHolds is the sandboxes the API lists on host as live.
func (c *chaos) storeHolds(host string) map[string]bool {
	var sbs []chaosSandbox
	if err := c.client.once(c.t.Context(), c.client.pick(), "GET", "/v2/sandboxes?state=running,paused&limit=100", "", http.StatusOK, &sbs); err != nil {
		c.t.Fatalf("list sandboxes: %v", err)
	}
	held := map[string]bool{}
	for _, sb := range sbs {
		if sb.ClientID == host {
			held[sb.ID] = true
		}
	}
	return held
}

func (c *chaos) report() {
	var b strings.Builder
	fmt.Fprintf(&b, "\n| fault | failover | calls | failed first try | failed on retry | API p99 | sandboxes lost | leaked |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range c.rows {
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %d | %v | %d | %d |\n", r.fault, r.failover, r.calls, r.failed, r.retryFails,
			r.p99.Round(time.Millisecond), r.lost, r.leaked)
	}
	c.t.Log(b.String())
	if f := os.Getenv("ROOST_CHAOS_REPORT"); f != "" {
		_ = os.WriteFile(f, []byte(b.String()), 0o644)
	}
}
