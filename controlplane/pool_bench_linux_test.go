package controlplane_test

import (
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"roost.dev/roost/agent"
	"roost.dev/roost/controlplane"
	"roost.dev/roost/store"
	"roost.dev/roost/store/storetest"
)

// newPooledTestenv is the stack as roost up runs it, with a warm pool of
// size n for base, and slots network slots, all of which the team may
// use.
func newPooledTestenv(t testing.TB, n, slots int) *testenv {
	t.Helper()
	requireNamespace(t)
	s := int64(slots)
	cfg := controlplane.Config{Local: localAgent(), TeamQuota: store.Quota{
		store.LimitSandboxes: s, store.LimitVCPUs: s * agent.DefaultVCPUs,
		store.LimitMemoryMB: s * agent.DefaultMemoryMB, store.LimitDiskMB: s * agent.DefaultDiskMB,
	}}
	return newTestenvAgent(t, cfg, storetest.SQLiteURL(t), namespaceRuntime, slots,
		func(c *agent.Config) { c.WarmPools = map[string]int{"base": n} })
}

// waitWarm waits until the pool of base's default shape holds n warm
// sandboxes, and returns its stats.
func waitWarm(t testing.TB, m *agent.Manager, n int) agent.PoolStat {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		stats, _, _ := m.PoolStats()
		for _, s := range stats {
			if s.Ready >= n && s.Limits.MemoryMB == agent.DefaultMemoryMB {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("warm pool did not reach %d sandboxes: %+v", n, stats)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BenchmarkCreateWarm measures POST /v2/sandboxes → 201 with envd ready
// when a warm sandbox serves it (a claim), one create at a time with the
// pool refilled before each; its baseline, a cold create, is
// BenchmarkCreateREST of the same bench run. It also reports the memory
// of an idle warm sandbox. Destroys are outside the timed part.
func BenchmarkCreateWarm(b *testing.B) {
	e := newPooledTestenv(b, 2, testSlots)
	warm := map[string]any{"templateID": "base", "timeout": 300}
	create := func(body map[string]any) (time.Duration, string) {
		start := time.Now()
		r := e.do("POST", "/v2/sandboxes", e.key, body)
		d := time.Since(start)
		var c created
		r.want(b, http.StatusCreated).decode(b, &c)
		return d, c.SandboxID
	}
	destroy := func(id string) { e.do("DELETE", "/sandboxes/"+id, e.key, nil).want(b, http.StatusNoContent) }
	_, id := create(warm) // the pool learns what to start
	destroy(id)
	var lat []time.Duration
	_, hits0, _ := e.agent.PoolStats()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		waitWarm(b, e.agent, 2)
		// The last destroy's teardown and the last fill's work settle.
		if err := e.agent.WaitTeardowns(b.Context()); err != nil {
			b.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		b.StartTimer()
		d, id := create(warm)
		lat = append(lat, d)
		b.StopTimer()
		destroy(id)
		b.StartTimer()
	}
	b.StopTimer()
	if _, hits, _ := e.agent.PoolStats(); hits-hits0 != int64(b.N) {
		b.Errorf("%d of %d creates were served by the pool", hits-hits0, b.N)
	}
	reportLatency(b, "create-warm", lat)
	// The pool's memory is read every second.
	idle := waitWarm(b, e.agent, 2)
	for deadline := time.Now().Add(10 * time.Second); idle.MemoryBytes == 0 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		idle = waitWarm(b, e.agent, 2)
	}
	b.ReportMetric(float64(idle.MemoryBytes)/float64(idle.Ready)/(1<<20), "warm-idle-MiB")
}

// burstCreates, burstClients and burstPool are BenchmarkCreateBurst's
// load: the "1,000 creates from 16 clients with a pool of 32";
// $ROOST_BENCH_BURST sets another count.
const (
	// maxPoolGrowth is the agent's bound on a pool's growth with demand.
	maxPoolGrowth = 4
	burstCreates  = 1000
	burstClients  = 16
	burstPool     = 32
)

// BenchmarkCreateBurst measures a burst of creates from many clients at
// once on a host with a warm pool: the time until every one answered 201
// with envd ready, the creates/s, and how many the pool served. The
// sandboxes are destroyed after, untimed. b.N is ignored; run with
// -benchtime 1x.
func BenchmarkCreateBurst(b *testing.B) {
	n := burstCreates
	if v, err := strconv.Atoi(os.Getenv("ROOST_BENCH_BURST")); err == nil && v > 0 {
		n = v
	}
	// Slots for the burst, the pool grown by it, and the pool's fills.
	e := newPooledTestenv(b, burstPool, n+maxPoolGrowth*burstPool+8)
	body := map[string]any{"templateID": "base", "timeout": 900}
	var c created
	e.do("POST", "/v2/sandboxes", e.key, body).want(b, http.StatusCreated).decode(b, &c)
	e.do("DELETE", "/sandboxes/"+c.SandboxID, e.key, nil).want(b, http.StatusNoContent)
	for b.Loop() {
		waitWarm(b, e.agent, burstPool)
		_, hits0, misses0 := e.agent.PoolStats()
		var next atomic.Int64
		ids := make([]string, n)
		var wg sync.WaitGroup
		start := time.Now()
		for range burstClients {
			wg.Go(func() {
				for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
					r := e.do("POST", "/v2/sandboxes", e.key, body)
					if r.status != http.StatusCreated {
						b.Errorf("create %d: %d %s", i, r.status, r.body)
						return
					}
					var c created
					r.decode(b, &c)
					ids[i] = c.SandboxID
				}
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		_, hits, misses := e.agent.PoolStats()
		b.ReportMetric(elapsed.Seconds(), "all-ready-s")
		b.ReportMetric(float64(n)/elapsed.Seconds(), "creates/s")
		b.ReportMetric(float64(hits-hits0), "pool-hits")
		b.ReportMetric(float64(misses-misses0), "pool-misses")
		destroyAll(b, e, ids)
	}
}

// destroyAll deletes the sandboxes ids from burstClients clients.
func destroyAll(b *testing.B, e *testenv, ids []string) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range burstClients {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < len(ids); i = int(next.Add(1)) - 1 {
				if ids[i] != "" {
					e.do("DELETE", "/sandboxes/"+ids[i], e.key, nil).want(b, http.StatusNoContent)
				}
			}
		})
	}
	wg.Wait()
}
