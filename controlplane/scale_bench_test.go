package controlplane_test

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"roost.dev/roost/controlplane"
	"roost.dev/roost/store"
	"roost.dev/roost/store/storetest"
)

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
// 10 s. The fake agents and the load run in a process of their own
// (scalefakes_test.go says why), so this process is the control plane's
// (and the benchmark's, which sleeps). Over a minute
// (ROOST_BENCH_SCALE_SECONDS) it reports the control plane's CPU as
// getrusage counts it, the fakes' beside it, the store's statements per
// second, the creates' p50 and p99, and the sequential scans PostgreSQL
// made of the sandboxes table (0: every hot query used an index). Every
// distinct statement of the minute is then EXPLAINed (scaleexplain_test.go):
// one that would scan a table growing with the cluster fails the benchmark.
// ROOST_BENCH_CPUPROFILE names a file to keep the minute's CPU profile of
// the control plane's process in (so it cannot run under go test
// -cpuprofile, which would profile the warm-up too). ROOST_BENCH_LOG
// names a file for the control plane's warnings and errors.
func BenchmarkControlPlaneScale(b *testing.B) {
	dbURL := storetest.PostgresURL(b)
	hosts, perHost := envInt("ROOST_BENCH_HOSTS", 100), envInt("ROOST_BENCH_HOST_SANDBOXES", 1000)
	window := time.Duration(envInt("ROOST_BENCH_SCALE_SECONDS", 60)) * time.Second
	reg := prometheus.NewRegistry()
	sent := &statementLog{seen: map[string][]any{}}
	st, err := store.Open(b.Context(), dbURL, benchLog(b), store.WithRegisterer(reg), store.WithStatements(sent.sent))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	big := int64(10 * hosts * perHost)
	cp, err := controlplane.New(controlplane.Config{TeamQuota: store.Quota{store.LimitSandboxes: big, store.LimitVCPUs: big,
		store.LimitMemoryMB: big * 1024, store.LimitDiskMB: big * 1024}}, st, benchLog(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cp.Close)
	key, err := cp.CreateTeamWithKey(b.Context(), "scale")
	if err != nil {
		b.Fatal(err)
	}
	api := httptest.NewServer(cp.Handler())
	b.Cleanup(api.Close)
	fakes := startScaleFakes(b, scaleConfig{hosts: hosts, perHost: perHost, api: api.URL, key: key})
	addFakeHosts(b, cp, st, fakes.urls)
	seedSandboxes(b, st, hosts, perHost)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	b.Cleanup(func() { cancel(); wg.Wait() })
	wg.Go(func() { _ = cp.Run(ctx) })
	fakes.send(b, "load")
	time.Sleep(15 * time.Second) // a reconcile round and a timeout sweep at full load
	fakes.send(b, "measure")

	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	stopProfile := startProfile(b)
	scans0, queries0, cpu0 := seqScans(b, db), statements(b, reg), processCPU()
	sent.on.Store(true)
	b.ResetTimer()
	time.Sleep(window)
	b.StopTimer()
	sent.on.Store(false)
	scans, cpu := seqScans(b, db)-scans0, processCPU()-cpu0
	kinds, queries := since(queries0, statements(b, reg))
	stopProfile()
	r := fakes.stop(b)
	explained, scanning := explainAll(b, db, sent)
	pct := func(d time.Duration) float64 { return 100 * d.Seconds() / window.Seconds() }
	b.ReportMetric(pct(cpu), "cp-cpu-%-of-one-core")
	b.ReportMetric(pct(r.CPU), "fakes-cpu-%-of-one-core")
	b.ReportMetric(float64(queries)/window.Seconds(), "statements/s")
	b.ReportMetric(float64(scans), "sandbox-seq-scans")
	b.ReportMetric(float64(explained), "statements-explained")
	b.ReportMetric(float64(len(scanning)), "statements-scanning-big-tables")
	b.ReportMetric(float64(r.P50.Microseconds())/1000, "create-p50-ms")
	b.ReportMetric(float64(r.P99.Microseconds())/1000, "create-p99-ms")
	b.Logf("%d hosts x %d sandboxes, %v: control plane's process CPU %v (%.1f%% of a core), fakes' and load's %v (%.1f%%); "+
		"%d statements (%.0f/s), %d sequential scans of sandboxes; %d creates, p50 %v p99 %v",
		hosts, perHost, window, cpu, pct(cpu), r.CPU, pct(r.CPU), queries, float64(queries)/window.Seconds(), scans, r.Creates, r.P50, r.P99)
	b.Logf("statements: %s", strings.Join(kinds, ", "))
	for _, q := range scanning {
		b.Errorf("a statement of the minute scans a big table, no index serving it:\n%s", q)
	}
	if r.Failed > 0 {
		b.Errorf("%d creates failed; the first: %s", r.Failed, r.Err)
	}
}

// benchLog is the control plane's log: warnings and errors, to the file
// ROOST_BENCH_LOG names, or nowhere.
func benchLog(b *testing.B) *slog.Logger {
	var to io.Writer = io.Discard
	if name := os.Getenv("ROOST_BENCH_LOG"); name != "" {
		f, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { f.Close() })
		to = f
	}
	return slog.New(slog.NewTextHandler(to, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// startProfile profiles this process's CPU when ROOST_BENCH_CPUPROFILE
// names a file to keep it in, until the function it returns is called.
func startProfile(b *testing.B) func() {
	name := os.Getenv("ROOST_BENCH_CPUPROFILE")
	if name == "" {
		return func() {}
	}
	var prof bytes.Buffer
	if err := pprof.StartCPUProfile(&prof); err != nil {
		b.Fatalf("%v: the benchmark takes its own CPU profile (ROOST_BENCH_CPUPROFILE keeps it)", err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := os.WriteFile(name, prof.Bytes(), 0o644); err != nil {
			b.Error(err)
		}
	}
}

// scaleFakes is the fakes' process (a copy of this binary, scaleFakesEnv).
type scaleFakes struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
	urls []string // of the fake agents, fake host i's at i
}

// startScaleFakes starts the fakes' process and waits for its agents.
func startScaleFakes(b *testing.B, c scaleConfig) *scaleFakes {
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d %d %s %s", scaleFakesEnv, c.hosts, c.perHost, c.api, c.key))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	f := &scaleFakes{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	b.Cleanup(func() { in.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for f.out.Scan() && f.out.Text() != "ready" {
		if _, url, ok := strings.Cut(strings.TrimPrefix(f.out.Text(), "agent "), " "); ok {
			f.urls = append(f.urls, url)
		}
	}
	if len(f.urls) != c.hosts {
		b.Fatalf("the fakes' process started %d agents of %d: %v", len(f.urls), c.hosts, f.out.Err())
	}
	return f
}

func (f *scaleFakes) send(b *testing.B, cmd string) {
	if _, err := fmt.Fprintln(f.in, cmd); err != nil {
		b.Fatalf("the fakes' process: %v", err)
	}
}

// stop ends the load and returns what the fakes saw.
func (f *scaleFakes) stop(b *testing.B) scaleReport {
	f.send(b, "stop")
	var r scaleReport
	if !f.out.Scan() {
		b.Fatalf("the fakes' process sent no report: %v", f.out.Err())
	}
	if err := json.Unmarshal(f.out.Bytes(), &r); err != nil {
		b.Fatalf("the fakes' report %q: %v", f.out.Text(), err)
	}
	return r
}

// addFakeHosts adds the fake hosts at urls, each with its heartbeat token.
func addFakeHosts(b *testing.B, cp *controlplane.Server, st store.Store, urls []string) {
	for i, url := range urls {
		name, token := fakeHostName(i), fakeHostToken(i)
		if err := cp.AddHost(b.Context(), store.Host{ID: name, URL: url}, token); err != nil {
			b.Fatal(err)
		}
		// Heartbeats authenticate by the token's hash, as a registered
		// agent's do.
		h, err := st.GetHost(b.Context(), name)
		if err != nil {
			b.Fatal(err)
		}
		h.TokenHash = store.HashKey(token)
		if err := st.UpsertHost(b.Context(), h); err != nil {
			b.Fatal(err)
		}
	}
}

// seedTeams is how many teams the seeded sandboxes belong to: a team's
// create sums what the team holds (its quota), so one team of 100,000
// sandboxes would measure that sum, not the control plane's scale.
const seedTeams = 100

// seedSandboxes gives every host perHost running sandboxes in the store,
// spread over seedTeams teams other than the load's; the fake agents
// list the same (newFakeAgent).
func seedSandboxes(b *testing.B, st store.Store, hosts, perHost int) {
	for i := range seedTeams {
		if err := st.CreateTeam(b.Context(), store.Team{ID: fmt.Sprintf("seedteam%03d", i), Name: "seed"}); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Int64
	total := int64(hosts * perHost)
	now := time.Now().UTC()
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < total; i = next.Add(1) - 1 {
				host := fakeHostName(int(i) % hosts)
				sb := store.Sandbox{ID: seedID(int(i)), TeamID: fmt.Sprintf("seedteam%03d", i%seedTeams), HostID: host, ClientID: host, TemplateID: "base", Alias: "base",
					State: store.SandboxRunning, VCPUs: 1, MemoryMB: 64, DiskMB: 512, TimeoutSecs: 86400,
					StartedAt: now, EndAt: now.Add(24 * time.Hour), EnvdVersion: "0.6.4", TrafficAccessToken: "t"}
				if err := st.CreateSandbox(context.Background(), sb); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
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
