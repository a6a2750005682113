package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"roost.dev/roost/bench/samples"
)

// config is the harness's flags.
type config struct {
	Quick      bool
	QEMU       bool // also the qemu runtime's create and restore
	Out        string
	Roost      string
	Envd       string
	Density    int
	E2BModules string
	// InterpreterModules is the directory whose node_modules holds
	// @e2b/code-interpreter.
	InterpreterModules string
}

// sizes are the sample counts and durations of one kind of run.
type sizes struct {
	creates, agentCreates, restCreates, execs, e2bExecs, ptyKeys, forkExecs int
	envdStarts, envdMiB, density                                            int
	// confinement is the iterations of the confinement benchmarks,
	// each one confined and one unconfined run.
	confinement int
	// Template benchmarks (issue 13): unpacks of the ~300 MB image (each
	// also a tar -x), cached rebuilds, fresh hosts pulling the template,
	// creates with a start command (each also one by hand).
	unpacks, rebuilds, pullCreates, startCreates int
	// Persistence benchmarks (issue 14): hibernate/restore rounds of one
	// sandbox (each also a freeze and thaw), and the sandboxes hibernated
	// and restored at once.
	hibernates, hibernateMany, forks int
	// Metrics history (issue 16): the idle sandboxes whose sampling is
	// timed, and the rounds of 50 samples of each.
	sampled, samplingRounds int
	// Dashboard (issue 17): keys typed in the browser's terminal (and as
	// many by the Go client), the sandboxes its table lists, and the
	// page loads timed against them.
	dashKeys, dashSandboxes, dashLoads int
	// Warm pools (issue 18): the creates of a burst from 16 clients.
	burst int
	// The control plane at scale (issue 19): simulated hosts, sandboxes
	// on each, seconds measured.
	scaleHosts, scaleSandboxes, scaleSeconds int
	duration                                 time.Duration // CreateThroughput; ProxySandbox loads run a sixth of it
}

func sizesFor(quick bool) sizes {
	if quick {
		return sizes{creates: 20, agentCreates: 10, restCreates: 10, execs: 50, e2bExecs: 20, ptyKeys: 100, forkExecs: 200,
			envdStarts: 200, envdMiB: 64, density: 20, confinement: 5,
			unpacks: 1, rebuilds: 5, pullCreates: 1, startCreates: 10, hibernates: 5, hibernateMany: 10, forks: 1,
			sampled: 10, samplingRounds: 1, dashKeys: 100, dashSandboxes: 50, dashLoads: 3, burst: 100, duration: 10 * time.Second,
			scaleHosts: 10, scaleSandboxes: 100, scaleSeconds: 20}
	}
	return sizes{creates: 200, agentCreates: 100, restCreates: 100, execs: 500, e2bExecs: 200, ptyKeys: 5000, forkExecs: 1000,
		envdStarts: 1000, envdMiB: 256, density: 1000, confinement: 30,
		unpacks: 3, rebuilds: 20, pullCreates: 3, startCreates: 30, hibernates: 30, hibernateMany: 100, forks: 5,
		sampled: 100, samplingRounds: 3, dashKeys: 2000, dashSandboxes: 1000, dashLoads: 10, burst: 1000, duration: time.Minute,
		scaleHosts: 100, scaleSandboxes: 1000, scaleSeconds: 60}
}

// benchModule is the directory of this harness's Go module, relative to
// the repository's root, where make bench runs it.
const benchModule = "bench/run"

// step is one benchmark program run.
type step struct {
	name string
	args []string // after "go"
	env  []string
}

func run(cfg config) (*results, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("sandboxes need root: run make bench as root")
	}
	for _, b := range []string{cfg.Roost, cfg.Envd} {
		if _, err := os.Stat(b); err != nil {
			return nil, fmt.Errorf("%s missing: run make build first", b)
		}
	}
	envd, err := filepath.Abs(cfg.Envd)
	if err != nil {
		return nil, err
	}
	roost, err := filepath.Abs(cfg.Roost)
	if err != nil {
		return nil, err
	}
	sz := sizesFor(cfg.Quick)
	if cfg.Density > 0 {
		sz.density = cfg.Density
	}
	res := newResults()
	res.Date, res.Quick = time.Now().UTC(), cfg.Quick
	res.Machine = machine()
	if out, err := exec.Command("go", "version").Output(); err == nil {
		res.Go = strings.TrimSpace(string(out))
	}
	sampleDir, err := os.MkdirTemp("", "roost-bench-samples-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(sampleDir)
	start := time.Now()

	// The baseline of every exec row: fork+exec of /bin/true from here.
	local := forkExec(sz.forkExecs)
	res.Samples["local-fork-exec"] = set("local-fork-exec", local)
	res.set("Local", "fork-exec-p50-ms", pctMs(local, 50))
	res.set("Local", "fork-exec-p99-ms", pctMs(local, 99))

	gotest := func(bench, benchtime, pkg string) []string {
		return []string{"test", "-run", "^$", "-bench", bench, "-benchtime", benchtime, "-timeout", "60m", pkg}
	}
	x := func(n int) string { return strconv.Itoa(n) + "x" }
	dur := "ROOST_BENCH_DURATION=" + sz.duration.String()
	steps := []step{
		// The envd benchmark lives in this harness's module (bench/run),
		// which go runs from there: the binary's path must not be relative.
		{name: "envd binary", args: []string{"-C", benchModule, "run", "./envd", "-envd", envd, "-starts", strconv.Itoa(sz.envdStarts), "-mib", strconv.Itoa(sz.envdMiB)}},
		{name: "namespace create", args: gotest("^(BenchmarkCreateReady|BenchmarkBareUnshare)$", x(sz.creates), "./runtime/namespace")},
		// Confined and unconfined sandboxes alternate in each iteration.
		{name: "namespace confinement", args: gotest("^(BenchmarkConfinementCreate|BenchmarkConfinementSyscalls)$", x(sz.confinement), "./runtime/namespace")},
		{name: "agent create", args: gotest("^BenchmarkAgentCreate$", x(sz.agentCreates), "./agent")},
		{name: "template unpack", args: gotest("^BenchmarkUnpackImage$", x(sz.unpacks), "./template/image")},
		{name: "template rebuild", args: gotest("^BenchmarkTemplateRebuild$", x(sz.rebuilds), "./agent")},
		{name: "template pull", args: gotest("^BenchmarkTemplatePullCreate$", x(sz.pullCreates), "./agent")},
		{name: "template start command", args: gotest("^BenchmarkStartCmdCreate$", x(sz.startCreates), "./agent")},
		{name: "namespace hibernation", args: gotest("^BenchmarkHibernate$", x(sz.hibernates), "./runtime/namespace")},
		{name: "hibernate many", args: gotest("^BenchmarkHibernateMany$", "1x", "./agent"),
			env: []string{"ROOST_BENCH_HIBERNATE=" + strconv.Itoa(sz.hibernateMany)}},
		{name: "namespace fork", args: gotest("^BenchmarkForkNamespace$", x(sz.forks), "./agent")},
		// The history's memory is virtual time: 24 h of 1000 sandboxes
		// in seconds, whatever the run.
		{name: "metrics history", args: gotest("^BenchmarkHistory24h$", "1x", "./metrichistory")},
		{name: "metrics sampling", args: gotest("^BenchmarkMetricsSampling$", x(sz.samplingRounds), "./agent"),
			env: []string{"ROOST_BENCH_SAMPLED=" + strconv.Itoa(sz.sampled)}},
		{name: "REST create", args: gotest("^BenchmarkCreateREST$", x(sz.restCreates), "./controlplane")},
		{name: "warm-pool create", args: gotest("^BenchmarkCreateWarm$", x(sz.restCreates), "./controlplane")},
		{name: "warm-pool burst", args: gotest("^BenchmarkCreateBurst$", "1x", "./controlplane"),
			env: []string{"ROOST_BENCH_BURST=" + strconv.Itoa(sz.burst)}},
		{name: "REST create with audit and events", args: gotest("^BenchmarkCreateRESTLogged$", x(2*sz.restCreates), "./controlplane")},
		{name: "REST exec", args: gotest("^BenchmarkExecTrueREST$", x(sz.execs), "./controlplane")},
		{name: "concurrent creates", args: gotest("^BenchmarkCreateThroughput$", "1x", "./controlplane"), env: []string{dur}},
		{name: "proxy load", args: gotest("^BenchmarkProxySandbox$", "1x", "./controlplane"), env: []string{dur}},
		{name: "PTY echo", args: gotest("^BenchmarkPTYEcho$", x(sz.ptyKeys), "./controlplane")},
		// On PostgreSQL ($ROOST_TEST_POSTGRES; skipped without).
		{name: "control plane at scale", args: gotest("^BenchmarkControlPlaneScale$", "1x", "./controlplane"),
			env: []string{"ROOST_BENCH_HOSTS=" + strconv.Itoa(sz.scaleHosts), "ROOST_BENCH_HOST_SANDBOXES=" + strconv.Itoa(sz.scaleSandboxes),
				"ROOST_BENCH_SCALE_SECONDS=" + strconv.Itoa(sz.scaleSeconds)}},
		// The dashboard in headless Chromium: its terminal's echo on
		// testenv's stack; its table of real sandboxes, which outnumber
		// testenv's network slots, and its first page on a roost up.
		{name: "dashboard terminal echo", args: gotest("^BenchmarkDashboardEcho$", x(sz.dashKeys), "./dashboard")},
		{name: "dashboard table and first page", args: gotest("^BenchmarkDashboardTable$", x(sz.dashLoads), "./dashboard"),
			env: []string{"ROOST_BENCH_ROOST=" + roost, "ROOST_BENCH_DASH_SANDBOXES=" + strconv.Itoa(sz.dashSandboxes)}},
		{name: "density", args: gotest("^BenchmarkDensity$", "1x", "./runtime/namespace"),
			env: []string{"ROOST_DENSITY=" + strconv.Itoa(sz.density)}},
	}
	if cfg.QEMU {
		boots := 5
		if cfg.Quick {
			boots = 2
		}
		steps = append(steps, step{name: "qemu create and restore",
			args: gotest("^(BenchmarkCreate|BenchmarkRestore)$", x(boots), "./runtime/qemu")},
			step{name: "qemu template capture", args: gotest("^BenchmarkStartCmdCreateQEMU$", x(2*boots), "./agent")})
	}
	for _, s := range steps {
		t0 := time.Now()
		fmt.Printf("bench: %s: go %s\n", s.name, strings.Join(s.args, " "))
		cmd := exec.Command("go", s.args...)
		cmd.Env = append(append(os.Environ(), samples.Env+"="+sampleDir), s.env...)
		var out bytes.Buffer
		cmd.Stdout = io.MultiWriter(os.Stdout, &out)
		cmd.Stderr = io.MultiWriter(os.Stderr, &out)
		err := cmd.Run()
		res.parseBench(&out)
		if err != nil {
			res.Failures = append(res.Failures, fmt.Sprintf("%s: %v (output above)", s.name, err))
		}
		fmt.Printf("bench: %s: %s\n", s.name, time.Since(t0).Round(time.Second))
	}

	if kib, err := dashboardJS(filepath.Join("dashboard", "web", "dist")); err != nil {
		res.Failures = append(res.Failures, "dashboard JavaScript size: "+err.Error())
	} else {
		res.set("Dashboard", "js-gzip-KiB", kib)
	}

	t0 := time.Now()
	fmt.Println("bench: E2B SDK exec against roost up")
	if err := e2bExec(cfg, sz.e2bExecs, sampleDir, res); err != nil {
		res.Failures = append(res.Failures, "E2B SDK exec: "+err.Error())
	}
	fmt.Printf("bench: E2B SDK exec: %s\n", time.Since(t0).Round(time.Second))

	got, err := samples.Read(sampleDir)
	if err != nil {
		return nil, err
	}
	for k, v := range got {
		res.Samples[k] = v
	}
	res.Elapsed = time.Since(start)
	return res, nil
}

// e2bExec starts `roost up --no-prune` on a scratch data directory (the
// base template shared with the Go tests' cache) and a free loopback port,
// and times `true` through the E2B JS SDK.
func e2bExec(cfg config, n int, sampleDir string, res *results) error {
	mods, err := filepath.Abs(cfg.E2BModules)
	if err != nil {
		return err
	}
	if err := npmInstalled(mods, "e2b"); err != nil {
		return err
	}
	cache := os.Getenv("ROOST_TEST_CACHE")
	if cache == "" {
		cache = "/var/tmp/roost-test-cache"
	}
	data, err := os.MkdirTemp("/var/tmp", "roost-bench-")
	if err != nil {
		return err
	}
	if err := os.Symlink(filepath.Join(cache, "templates"), filepath.Join(data, "templates")); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	addr := ln.Addr().String()
	ln.Close()
	key := make([]byte, 16)
	rand.Read(key)
	apiKey := "roost_bench_" + hex.EncodeToString(key)
	var log bytes.Buffer
	up := exec.Command(cfg.Roost, append([]string{"up", "--no-prune", "--data-dir", data, "--listen", addr, "--log-level", "warn"}, mirrorFlags()...)...)
	up.Env = append(os.Environ(), "ROOST_API_KEY="+apiKey)
	up.Stdout, up.Stderr = &log, &log
	if err := up.Start(); err != nil {
		return err
	}
	defer func() {
		up.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { up.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			up.Process.Kill()
			<-done
		}
		removeUnmounted(data)
	}()
	if err := waitListening(addr, 30*time.Second); err != nil {
		return fmt.Errorf("roost up: %w; log: %s", err, log.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	stack := nodeStack{addr: addr, apiKey: apiKey, log: &log}
	e2bEnv := "ROOST_E2B_MODULES=" + mods
	var s samples.Set
	if err := stack.run(ctx, "e2b_exec.mjs", e2bEnv, &s, strconv.Itoa(n)); err != nil {
		return err
	}
	res.Samples[s.Name] = s
	res.set("E2B", "p50-ms", samples.Percentile(s.Samples, 50))
	res.set("E2B", "p99-ms", samples.Percentile(s.Samples, 99))

	var both struct{ Sets []samples.Set }
	if err := stack.run(ctx, "e2b_lifecycle.mjs", e2bEnv, &both, strconv.Itoa(lifecycles(n))); err != nil {
		return err
	}
	for _, s := range both.Sets {
		res.Samples[s.Name] = s
		res.set("E2B", s.Name+"-p50-ms", samples.Percentile(s.Samples, 50))
	}
	return interpreterBench(ctx, cfg, n, stack, res)
}

// dashboardJS is the JavaScript the dashboard ships, gzipped as its
// build measures it (each file at level 9), in KiB: what make build put
// in dir and the roost binary embeds.
func dashboardJS(dir string) (float64, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.js"))
	if err != nil {
		return 0, err
	}
	if len(files) == 0 {
		return 0, fmt.Errorf("no %s/*.js: make build builds the dashboard", dir)
	}
	total := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return 0, err
		}
		var z bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&z, gzip.BestCompression)
		zw.Write(b)
		if err := zw.Close(); err != nil {
			return 0, err
		}
		total += z.Len()
	}
	return float64(total) / 1024, nil
}

// nodeStack runs the bench's node scripts against a roost up.
type nodeStack struct {
	addr, apiKey string
	log          *bytes.Buffer // roost up's, whose end a failure shows
}

// run runs bench/run/<script> with args and env besides the E2B SDK's
// (API and sandbox URL, key), and decodes the last line it prints into
// out.
func (st nodeStack) run(ctx context.Context, script, env string, out any, args ...string) error {
	node := exec.CommandContext(ctx, "node", append([]string{filepath.Join("bench", "run", script)}, args...)...)
	node.Env = append(os.Environ(), env, "E2B_API_URL=http://"+st.addr, "E2B_SANDBOX_URL=http://"+st.addr, "E2B_API_KEY="+st.apiKey)
	node.Stderr = os.Stderr
	b, err := node.Output()
	if err != nil {
		return fmt.Errorf("node %s: %v; roost up log: %s", script, err, lastLines(st.log.String(), 20))
	}
	if err := json.Unmarshal(bytes.TrimSpace(lastLine(b)), out); err != nil {
		return fmt.Errorf("node %s output %q: %w", script, b, err)
	}
	return nil
}

// npmInstalled installs the packages of dir's package-lock.json (npm
// ci) unless pkg is there already.
func npmInstalled(dir, pkg string) error {
	if _, err := os.Stat(filepath.Join(dir, "node_modules", pkg)); err == nil {
		return nil
	}
	fmt.Fprintf(os.Stderr, "bench: installing %s in %s (npm ci)\n", pkg, dir)
	cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("install %s in %s: npm ci: %v: %s", pkg, dir, err, out)
	}
	return nil
}

// interpreterBench times @e2b/code-interpreter against the same roost up
// (e2b_interpreter.mjs): its template's first create (a build), creates
// until the first runCode answers, and runCode through the proxy beside
// the kernel's own round trip.
func interpreterBench(ctx context.Context, cfg config, n int, stack nodeStack, res *results) error {
	mods, err := filepath.Abs(cfg.InterpreterModules)
	if err != nil {
		return err
	}
	if err := npmInstalled(mods, filepath.Join("@e2b", "code-interpreter")); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Minute)
	defer cancel()
	var got struct {
		BuildSeconds float64
		Sets         []samples.Set
	}
	if err := stack.run(ctx, "e2b_interpreter.mjs", "ROOST_INTERPRETER_MODULES="+mods, &got, strconv.Itoa(lifecycles(n)), strconv.Itoa(n)); err != nil {
		return err
	}
	res.set("Interpreter", "build-s", got.BuildSeconds)
	for _, s := range got.Sets {
		res.Samples[s.Name] = s
		res.set("Interpreter", s.Name+"-p50-ms", samples.Percentile(s.Samples, 50))
	}
	return nil
}

// mirrorFlags let build sandboxes reach the Debian mirror the base
// template's sources name (code-interpreter-v1's build runs apt-get),
// wherever it resolves: a local mirror on a private or documentation
// address is one sandboxes may not reach by default.
func mirrorFlags() []string {
	ips, _ := net.LookupIP("deb.debian.org")
	var flags []string
	for _, ip := range ips {
		if ip4 := ip.To4(); ip4 != nil {
			flags = append(flags, "--allow-sandbox-cidr", ip4.String()+"/32")
		}
	}
	return flags
}

// lifecycles is how many create → command → kill rounds each create
// route gets, from the number of execs timed.
func lifecycles(execs int) int { return max(execs/10, 5) }

// removeUnmounted removes the scratch data directory once roost up has
// stopped. With no sandbox left, what is still mounted below it (the
// runtime's template lower layers, kept for the next start) is detached
// first; with a sandbox left behind, the directory stays: removing it
// would reach into the sandbox's mounts.
func removeUnmounted(dir string) {
	if left, _ := os.ReadDir(filepath.Join(dir, "sandboxes")); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "bench: %s still holds %d sandboxes; left in place\n", dir, len(left))
		return
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	var mounts []string
	for line := range strings.SplitSeq(string(mi), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			mounts = append(mounts, f[4])
		}
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		if err := syscall.Unmount(mounts[i], syscall.MNT_DETACH); err != nil {
			fmt.Fprintf(os.Stderr, "bench: unmount %s: %v; %s left in place\n", mounts[i], err, dir)
			return
		}
	}
	os.RemoveAll(dir)
}

func waitListening(addr string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://" + addr + "/health"); err == nil {
			resp.Body.Close()
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("nothing listens on %s after %s", addr, within)
}

func forkExec(n int) []time.Duration {
	out := make([]time.Duration, 0, n)
	for range n {
		t0 := time.Now()
		_ = exec.Command("/bin/true").Run()
		out = append(out, time.Since(t0))
	}
	return out
}

func set(name string, ds []time.Duration) samples.Set {
	s := samples.Set{Name: name, Unit: "ms"}
	for _, d := range ds {
		s.Samples = append(s.Samples, float64(d)/float64(time.Millisecond))
	}
	return s
}

func pctMs(ds []time.Duration, p float64) float64 { return samples.Percentile(set("", ds).Samples, p) }

// machine describes the host: cores, memory, kernel, CPU model.
func machine() string {
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				mem = fmt.Sprintf("%.1f GiB", kb/(1<<20))
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	cpu := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return fmt.Sprintf("%d cores (%s), %s memory, Linux %s", runtime.NumCPU(), cpu, mem, strings.TrimSpace(string(kernel)))
}

func lastLine(b []byte) []byte {
	b = bytes.TrimSpace(b)
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		return b[i+1:]
	}
	return b
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
