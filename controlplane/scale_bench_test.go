package controlplane_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/pprof/profile"
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
// 10 s. Over a minute (ROOST_BENCH_SCALE_SECONDS) it reports the control
// plane's CPU (see cpuSplit for how it is told from the rest), the CPU of
// the whole process (the control plane, and the fake agents and load
// beside it), the store's statements per second, the creates' p50 and
// p99, and the sequential scans PostgreSQL made of the sandboxes table
// (0: every hot query used an index). ROOST_BENCH_CPUPROFILE names a file
// to keep the minute's CPU profile in (labelled: go tool pprof
// -tagignore role=. shows the control plane's own); the benchmark takes
// that profile itself, so it cannot run under go test -cpuprofile.
// ROOST_BENCH_LOG names a file for the control plane's warnings and
// errors.
func BenchmarkControlPlaneScale(b *testing.B) {
	dbURL := storetest.PostgresURL(b)
	hosts, perHost := envInt("ROOST_BENCH_HOSTS", 100), envInt("ROOST_BENCH_HOST_SANDBOXES", 1000)
	window := time.Duration(envInt("ROOST_BENCH_SCALE_SECONDS", 60)) * time.Second
	reg := prometheus.NewRegistry()
	var logTo io.Writer = io.Discard
	if name := os.Getenv("ROOST_BENCH_LOG"); name != "" {
		f, err := os.Create(name)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { f.Close() })
		logTo = f
	}
	log := slog.New(slog.NewTextHandler(logTo, &slog.HandlerOptions{Level: slog.LevelWarn}))
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
		wg.Go(func() { as(roleLoad, func() { heartbeat(ctx, api.URL, a.name, tokens[i]) }) })
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
	wg.Go(func() { as(roleLoad, func() { creates(ctx) }) })
	time.Sleep(15 * time.Second) // a reconcile round and a timeout sweep at full load
	latMu.Lock()
	lat = nil
	latMu.Unlock()

	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	var prof bytes.Buffer
	if err := pprof.StartCPUProfile(&prof); err != nil {
		b.Fatalf("%v: the benchmark takes its own CPU profile (ROOST_BENCH_CPUPROFILE keeps it)", err)
	}
	scans0, queries0, cpu0 := seqScans(b, db), statements(b, reg), cpuTime()
	b.ResetTimer()
	time.Sleep(window)
	b.StopTimer()
	scans, cpu := seqScans(b, db)-scans0, cpuTime()-cpu0
	kinds, queries := since(queries0, statements(b, reg))
	pprof.StopCPUProfile()
	if name := os.Getenv("ROOST_BENCH_CPUPROFILE"); name != "" {
		if err := os.WriteFile(name, prof.Bytes(), 0o644); err != nil {
			b.Error(err)
		}
	}
	split := splitCPU(b, &prof)
	latMu.Lock()
	slices.Sort(lat)
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	latMu.Unlock()
	pct := func(d time.Duration) float64 { return 100 * d.Seconds() / window.Seconds() }
	// The profile's samples miss part of the process's CPU (a thread's
	// timer is checked at the kernel's ticks: a thread that runs in short
	// bursts, as one waiting on sockets does, loses some): each share is
	// taken of what getrusage counted.
	share := func(d time.Duration) float64 { return pct(cpu) * d.Seconds() / split.total().Seconds() }
	b.ReportMetric(share(split.controlPlane+split.runtime), "cp-cpu-%-of-one-core")
	b.ReportMetric(pct(cpu), "process-cpu-%-of-one-core")
	b.ReportMetric(float64(queries)/window.Seconds(), "statements/s")
	b.ReportMetric(float64(scans), "sandbox-seq-scans")
	b.ReportMetric(float64(p50.Microseconds())/1000, "create-p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "create-p99-ms")
	b.Logf("%d hosts x %d sandboxes, %v: process CPU %v (%.1f%% of a core; %.1f%% in the profile's samples): control plane %.1f%% (its code %.1f%%, the runtime's own work %.1f%%), "+
		"fake agents %.1f%%, load %.1f%% (under the wrong role: %v); %d statements (%.0f/s), %d sequential scans of sandboxes, create p50 %v p99 %v",
		hosts, perHost, window, cpu, pct(cpu), pct(split.total()), share(split.controlPlane+split.runtime), share(split.controlPlane), share(split.runtime),
		share(split.fake), share(split.load), split.stray, queries, float64(queries)/window.Seconds(), scans, p50, p99)
	b.Logf("statements: %s", strings.Join(kinds, ", "))
	// A label that did not reach a goroutine shows as CPU of the control
	// plane's stacks under a label, or of the fakes' and load's without
	// one.
	if stray := split.stray; stray > split.total()/100 {
		b.Errorf("%v of %v of CPU ran under the wrong role: labels did not propagate", stray, split.total())
	}
}

// Goroutines' roles in the CPU profile (pprof label "role"): the fake
// agents' and the load's. The control plane's goroutines have none.
const (
	roleFake = "fake"
	roleLoad = "load"
)

// as runs fn labelled with role; the goroutines fn starts, and theirs,
// inherit the label.
func as(role string, fn func()) {
	pprof.Do(context.Background(), pprof.Labels("role", role), func(context.Context) { fn() })
}

// cpuSplit is the CPU of a profile by whose it was. The fake agents'
// servers are started, and the load's goroutines run, under a pprof
// label (as); goroutines inherit their creator's labels, so everything
// they start is labelled too: an http.Server's per-connection
// goroutines, an http.Transport's dials and read and write loops. The
// control plane's goroutines (its API server's, its loops', its agent
// client's connections) carry none. A sample without a label whose
// stack is the runtime's alone (the garbage collector's workers, the
// scheduler looking for work, sysmon) is work all of them cause: it is
// counted as the control plane's, which makes its figure an upper bound.
// The benchmark reports each share of the process's CPU as getrusage
// counts it.
type cpuSplit struct {
	controlPlane, runtime, fake, load time.Duration
	// stray is CPU whose label disagrees with its stack: the control
	// plane's or the store's code labelled, or the fakes' or the load's
	// unlabelled. It is near zero when the labels propagate.
	stray time.Duration
}

func (c cpuSplit) total() time.Duration { return c.controlPlane + c.runtime + c.fake + c.load }

func splitCPU(b *testing.B, prof *bytes.Buffer) cpuSplit {
	p, err := profile.Parse(prof)
	if err != nil {
		b.Fatal(err)
	}
	nanos := slices.IndexFunc(p.SampleType, func(t *profile.ValueType) bool { return t.Type == "cpu" && t.Unit == "nanoseconds" })
	if nanos < 0 {
		b.Fatalf("no cpu/nanoseconds in the profile: %v", p.SampleType)
	}
	var c cpuSplit
	for _, s := range p.Sample {
		d := time.Duration(s.Value[nanos])
		ours, theirs, runtimeOnly := false, false, true
		for _, loc := range s.Location {
			for _, l := range loc.Line {
				name := l.Function.Name
				switch {
				case strings.HasPrefix(name, "roost.dev/roost/controlplane."), strings.HasPrefix(name, "roost.dev/roost/store."):
					ours = true
				case strings.HasPrefix(name, "roost.dev/roost/controlplane_test.(*fakeAgent)"),
					strings.HasPrefix(name, "roost.dev/roost/gen/roost/hostagent/v1/hostagentv1connect.NewHostAgentServiceHandler"),
					strings.HasPrefix(name, "roost.dev/roost/controlplane_test.create"),
					strings.HasPrefix(name, "roost.dev/roost/controlplane_test.heartbeat"):
					theirs = true
				}
				if !strings.HasPrefix(name, "runtime.") && !strings.HasPrefix(name, "internal/runtime/") {
					runtimeOnly = false
				}
			}
		}
		switch role := s.Label["role"]; {
		case slices.Contains(role, roleFake):
			c.fake += d
		case slices.Contains(role, roleLoad):
			c.load += d
		case runtimeOnly:
			c.runtime += d
		default:
			c.controlPlane += d
		}
		if len(s.Label["role"]) > 0 && ours || len(s.Label["role"]) == 0 && theirs {
			c.stray += d
		}
	}
	return c
}

// startFakeHosts adds n fake hosts, each with a heartbeat token.
func startFakeHosts(b *testing.B, cp *controlplane.Server, st store.Store, n int) ([]*fakeAgent, []string) {
	var agents []*fakeAgent
	var tokens []string
	for i := range n {
		a := &fakeAgent{name: fmt.Sprintf("host%03d", i), sbs: map[string]*hostagentv1.Sandbox{}}
		_, h := hostagentv1connect.NewHostAgentServiceHandler(a)
		srv := httptest.NewUnstartedServer(h)
		as(roleFake, srv.Start) // its Serve, and so every connection's goroutine
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

// loadClient is the load's HTTP client. It keeps a connection for each
// simulated agent and for the creates, as agents and SDKs keep theirs:
// the control plane is not measured accepting a connection per request.
var loadClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024}}

func heartbeat(ctx context.Context, api, host, token string) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, "POST", api+"/v1/hosts/"+host+"/heartbeat", strings.NewReader(`{"sandboxes":1000,"vcpus":1000,"memoryMB":64000}`))
		req.Header.Set("Authorization", "Bearer "+token)
		if resp, err := loadClient.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
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
	resp, err := loadClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body) // all of it: the connection is kept
	if resp.StatusCode != http.StatusCreated {
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

// statements is how many statements the store has sent, by kind and
// table ("update sandboxes").
func statements(b *testing.B, reg *prometheus.Registry) map[string]int64 {
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	n := map[string]int64{}
	for _, mf := range mfs {
		if mf.GetName() != "roost_store_query_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var op, table string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "op":
					op = l.GetValue()
				case "table":
					table = l.GetValue()
				}
			}
			n[op+" "+table] += int64(m.GetHistogram().GetSampleCount())
		}
	}
	return n
}

// since is what counts added to before: the kinds of statement, most
// sent first ("update sandboxes 2400"), and their sum.
func since(before, counts map[string]int64) ([]string, int64) {
	var kinds []string
	var sum int64
	for k, n := range counts {
		if n -= before[k]; n > 0 {
			kinds, sum = append(kinds, fmt.Sprintf("%s %d", k, n)), sum+n
		}
	}
	slices.SortFunc(kinds, func(a, b string) int {
		na, _ := strconv.Atoi(a[strings.LastIndexByte(a, ' ')+1:])
		nb, _ := strconv.Atoi(b[strings.LastIndexByte(b, ' ')+1:])
		return nb - na
	})
	return kinds, sum
}

func cpuTime() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
