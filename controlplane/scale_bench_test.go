package controlplane_test

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/timestamppb"

	"roost.dev/roost/controlplane"
	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
	"roost.dev/roost/gen/roost/hostagent/v1/hostagentv1connect"
	"roost.dev/roost/store"
	"roost.dev/roost/store/storetest"
)

// fakeAgent is a host agent without sandboxes: creates and destroys
// change a map, which it lists.
type fakeAgent struct {
	hostagentv1connect.UnimplementedHostAgentServiceHandler
	name string
	mu   sync.Mutex
	sbs  map[string]*hostagentv1.Sandbox
}

func (f *fakeAgent) GetHostInfo(context.Context, *connect.Request[hostagentv1.GetHostInfoRequest]) (*connect.Response[hostagentv1.GetHostInfoResponse], error) {
	return connect.NewResponse(&hostagentv1.GetHostInfoResponse{Host: &hostagentv1.HostInfo{
		Hostname: f.name, Runtime: "namespace", Capacity: &hostagentv1.Capacity{Cpus: 64, MemoryMb: 1 << 20, MaxSandboxes: 5000},
	}}), nil
}

func (f *fakeAgent) add(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sbs[id] = &hostagentv1.Sandbox{SandboxId: id, Template: "base", State: hostagentv1.SandboxState_SANDBOX_STATE_RUNNING,
		Limits: &hostagentv1.Limits{Vcpus: 1, MemoryMb: 64, DiskMb: 512}, StartedAt: timestamppb.Now()}
}

func (f *fakeAgent) CreateSandbox(_ context.Context, r *connect.Request[hostagentv1.CreateSandboxRequest]) (*connect.Response[hostagentv1.CreateSandboxResponse], error) {
	f.add(r.Msg.GetSandboxId())
	f.mu.Lock()
	defer f.mu.Unlock()
	return connect.NewResponse(&hostagentv1.CreateSandboxResponse{Sandbox: f.sbs[r.Msg.GetSandboxId()]}), nil
}

func (f *fakeAgent) DestroySandbox(_ context.Context, r *connect.Request[hostagentv1.DestroySandboxRequest]) (*connect.Response[hostagentv1.DestroySandboxResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.sbs, r.Msg.GetSandboxId())
	return connect.NewResponse(&hostagentv1.DestroySandboxResponse{}), nil
}

func (f *fakeAgent) ListSandboxes(context.Context, *connect.Request[hostagentv1.ListSandboxesRequest]) (*connect.Response[hostagentv1.ListSandboxesResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]*hostagentv1.Sandbox, 0, len(f.sbs))
	for _, sb := range f.sbs {
		out = append(out, sb)
	}
	return connect.NewResponse(&hostagentv1.ListSandboxesResponse{Sandboxes: out}), nil
}

// envInt is the integer in environment variable name, or def.
func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// BenchmarkControlPlaneScale drives one control plane on PostgreSQL with
// simulated hosts (ROOST_BENCH_HOSTS, default 100) of
// ROOST_BENCH_HOST_SANDBOXES sandboxes each (default 1,000): every host
// heartbeats every 5 s, creates come at 50/s (with a 10 s timeout, which
// the timeout loop enforces), and the reconciler lists every host every
// 10 s. Over a minute (ROOST_BENCH_SCALE_SECONDS) it reports the CPU of
// the whole process (the control plane, and the fake agents and load
// beside it: an upper bound), the store's statements per second, the
// creates' p50 and p99, and the sequential scans PostgreSQL made of the
// sandboxes table (0: every hot query used an index).
func BenchmarkControlPlaneScale(b *testing.B) {
	dbURL := storetest.PostgresURL(b)
	hosts, perHost := envInt("ROOST_BENCH_HOSTS", 100), envInt("ROOST_BENCH_HOST_SANDBOXES", 1000)
	window := time.Duration(envInt("ROOST_BENCH_SCALE_SECONDS", 60)) * time.Second
	reg := prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(b.Context(), dbURL, log, store.WithRegisterer(reg))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	big := int64(10 * hosts * perHost)
	cp, err := controlplane.New(controlplane.Config{TeamQuota: store.Quota{store.LimitSandboxes: big, store.LimitVCPUs: big,
		store.LimitMemoryMB: big * 1024, store.LimitDiskMB: big * 1024}}, st, log)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cp.Close)
	key, err := cp.CreateTeamWithKey(b.Context(), "scale")
	if err != nil {
		b.Fatal(err)
	}
	agents, tokens := startFakeHosts(b, cp, st, hosts)
	seedSandboxes(b, st, agents, perHost)
	api := httptest.NewServer(cp.Handler())
	b.Cleanup(api.Close)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	b.Cleanup(func() { cancel(); wg.Wait() })
	wg.Go(func() { _ = cp.Run(ctx) })
	for i, a := range agents {
		wg.Go(func() { heartbeat(ctx, api.URL, a.name, tokens[i]) })
	}
	var lat []time.Duration
	var latMu sync.Mutex
	creates := func(ctx context.Context) {
		t := time.NewTicker(20 * time.Millisecond) // 50/s
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			wg.Go(func() {
				begin := time.Now()
				if err := create(ctx, api.URL, key); err != nil && ctx.Err() == nil {
					b.Errorf("create: %v", err)
				}
				latMu.Lock()
				lat = append(lat, time.Since(begin))
				latMu.Unlock()
			})
		}
	}
	wg.Go(func() { creates(ctx) })
	time.Sleep(15 * time.Second) // a reconcile round and a timeout sweep at full load
	latMu.Lock()
	lat = nil
	latMu.Unlock()

	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	scans0, queries0, cpu0 := seqScans(b, db), statements(b, reg), cpuTime()
	b.ResetTimer()
	time.Sleep(window)
	b.StopTimer()
	scans, queries, cpu := seqScans(b, db)-scans0, statements(b, reg)-queries0, cpuTime()-cpu0
	latMu.Lock()
	slices.Sort(lat)
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	latMu.Unlock()
	b.ReportMetric(100*cpu.Seconds()/window.Seconds(), "cpu-%-of-one-core")
	b.ReportMetric(float64(queries)/window.Seconds(), "statements/s")
	b.ReportMetric(float64(scans), "sandbox-seq-scans")
	b.ReportMetric(float64(p50.Microseconds())/1000, "create-p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "create-p99-ms")
	b.Logf("%d hosts x %d sandboxes, %v: process CPU %v (%.1f%% of a core), %d statements (%.0f/s), %d sequential scans of sandboxes, create p50 %v p99 %v",
		hosts, perHost, window, cpu, 100*cpu.Seconds()/window.Seconds(), queries, float64(queries)/window.Seconds(), scans, p50, p99)
}

// startFakeHosts adds n fake hosts, each with a heartbeat token.
func startFakeHosts(b *testing.B, cp *controlplane.Server, st store.Store, n int) ([]*fakeAgent, []string) {
	var agents []*fakeAgent
	var tokens []string
	for i := range n {
		a := &fakeAgent{name: fmt.Sprintf("host%03d", i), sbs: map[string]*hostagentv1.Sandbox{}}
		_, h := hostagentv1connect.NewHostAgentServiceHandler(a)
		srv := httptest.NewServer(h)
		b.Cleanup(srv.Close)
		token := fmt.Sprintf("fake-token-%03d", i)
		if err := cp.AddHost(b.Context(), store.Host{ID: a.name, URL: srv.URL}, token); err != nil {
			b.Fatal(err)
		}
		// Heartbeats authenticate by the token's hash, as a registered
		// agent's do.
		h2, err := st.GetHost(b.Context(), a.name)
		if err != nil {
			b.Fatal(err)
		}
		h2.TokenHash = store.HashKey(token)
		if err := st.UpsertHost(b.Context(), h2); err != nil {
			b.Fatal(err)
		}
		agents, tokens = append(agents, a), append(tokens, token)
	}
	return agents, tokens
}

// seedTeams is how many teams the seeded sandboxes belong to: a team's
// create sums what the team holds (its quota), so one team of 100,000
// sandboxes would measure that sum, not the control plane's scale.
const seedTeams = 100

// seedSandboxes gives every host perHost running sandboxes, in the store
// and on the host, spread over seedTeams teams other than the load's.
func seedSandboxes(b *testing.B, st store.Store, agents []*fakeAgent, perHost int) {
	for i := range seedTeams {
		if err := st.CreateTeam(b.Context(), store.Team{ID: fmt.Sprintf("seedteam%03d", i), Name: "seed"}); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Int64
	total := int64(len(agents) * perHost)
	now := time.Now().UTC()
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < total; i = next.Add(1) - 1 {
				a := agents[i%int64(len(agents))]
				id := fmt.Sprintf("seed%07d", i)
				sb := store.Sandbox{ID: id, TeamID: fmt.Sprintf("seedteam%03d", i%seedTeams), HostID: a.name, ClientID: a.name, TemplateID: "base", Alias: "base",
					State: store.SandboxRunning, VCPUs: 1, MemoryMB: 64, DiskMB: 512, TimeoutSecs: 86400,
					StartedAt: now, EndAt: now.Add(24 * time.Hour), EnvdVersion: "0.6.4", TrafficAccessToken: "t"}
				if err := st.CreateSandbox(context.Background(), sb); err != nil {
					b.Error(err)
					return
				}
				a.add(id)
			}
		})
	}
	wg.Wait()
}

func heartbeat(ctx context.Context, api, host, token string) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, "POST", api+"/v1/hosts/"+host+"/heartbeat", strings.NewReader(`{"sandboxes":1000,"vcpus":1000,"memoryMB":64000}`))
		req.Header.Set("Authorization", "Bearer "+token)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func create(ctx context.Context, api, key string) error {
	req, _ := http.NewRequestWithContext(ctx, "POST", api+"/v2/sandboxes", strings.NewReader(`{"templateID":"base","timeout":10}`))
	req.Header.Set("X-API-Key", key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		body, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s: %s", resp.Status, body)
	}
	return nil
}

// seqScans is how many sequential scans PostgreSQL has made of the
// sandboxes table.
func seqScans(b *testing.B, db *sql.DB) int64 {
	var n int64
	if err := db.QueryRow(`SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'sandboxes' AND schemaname = current_schema()`).Scan(&n); err != nil {
		b.Fatal(err)
	}
	return n
}

// statements is how many statements the store has sent.
func statements(b *testing.B, reg *prometheus.Registry) int64 {
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	var n uint64
	for _, mf := range mfs {
		if mf.GetName() != "roost_store_query_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			n += m.GetHistogram().GetSampleCount()
		}
	}
	return int64(n)
}

func cpuTime() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
