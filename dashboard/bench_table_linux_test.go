package dashboard_test

import (
	"bytes"
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"roost.dev/roost/bench/samples"
	"roost.dev/roost/mountinfo"
	"roost.dev/roost/runtime/runtimetest"
	"roost.dev/roost/template/templatetest"
)

// BenchmarkDashboardTable measures the dashboard against a real `roost
// up` (bin/roost, or $ROOST_BENCH_ROOST) holding $ROOST_BENCH_DASH_SANDBOXES
// running sandboxes (default 1000; more than the in-process testenv's
// network slots), created through the REST API. Each iteration, in
// Chromium with its cache off:
//
//   - the first page: navigation start → the sign-in form interactive
//     (and → its assets arrived), beside the page and its assets fetched
//     by a Go client on a new connection;
//   - the sandboxes table, signed in (the key in session storage):
//     navigation start → its first rows drawn (the first page of the
//     listing: the table's first render), and → the status line reads
//     "N of N sandboxes" with rows rendered (and when its listing began
//     and ended), beside the same listing (every page of GET
//     /v2/sandboxes, as the dashboard reads it) by a Go client;
//   - the table scrolled to its end: the milliseconds and animation
//     frames until its last row is rendered.
//
// It also reports how busy the host's CPUs were for 5 s before the
// browser started, with the sandboxes idle: they are not free, and the
// browser shares the cores with them.
func BenchmarkDashboardTable(b *testing.B) {
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("ROOST_BENCH_DASH_SANDBOXES")); err == nil && v > 0 {
		n = v
	}
	st := startBenchStack(b, n)
	t0 := time.Now()
	ids := st.createSandboxes(b, n, 4)
	created := time.Since(t0)
	b.Logf("created %d sandboxes in %s", len(ids), created.Round(time.Second))
	time.Sleep(5 * time.Second) // the creates' aftermath settles
	busy0, total0 := hostCPU(b)
	time.Sleep(5 * time.Second)
	busy1, total1 := hostCPU(b)
	idleBusy := 100 * float64(busy1-busy0) / float64(total1-total0)

	tab := newBenchTab(b, true)
	// A first load puts the tab on the dashboard's origin, whose session
	// storage the signed-in loads need.
	tab.navigate(st.url + "/?warm")
	cred, _ := json.Marshal(map[string]string{"kind": "key", "secret": st.key})
	signOut := `sessionStorage.removeItem('roost.credential')`
	signIn := fmt.Sprintf(`sessionStorage.setItem('roost.credential', %q)`, cred)
	table := "table" + strconv.Itoa(n)

	var signin, signinDOM, signinAssets, fetch, firstRows, render, renderDOM, listStart, listing, list, scroll []time.Duration
	var frames []float64
	i := 0
	for b.Loop() {
		i++
		var ms float64
		tab.eval(10*time.Second, signOut, nil)
		tab.navigate(fmt.Sprintf("%s/?signin=%d", st.url, i))
		tab.eval(30*time.Second, `__roostBench.wait('signin', 30000)`, &ms)
		signin = append(signin, benchMs(ms))
		tab.eval(10*time.Second, `__roostBench.marks.signinDOM`, &ms)
		signinDOM = append(signinDOM, benchMs(ms))
		tab.eval(10*time.Second, assetsLoaded, &ms)
		signinAssets = append(signinAssets, benchMs(ms))

		fetch = append(fetch, benchFetchPage(b, st.url))

		tab.eval(10*time.Second, signIn, nil)
		tab.navigate(fmt.Sprintf("%s/?table=%d#/sandboxes", st.url, i))
		tab.eval(2*time.Minute, `__roostBench.wait('`+table+`', 120000)`, &ms)
		render = append(render, benchMs(ms))
		tab.eval(10*time.Second, `__roostBench.marks.rows`, &ms)
		firstRows = append(firstRows, benchMs(ms))
		tab.eval(10*time.Second, `__roostBench.marks.`+table+`DOM`, &ms)
		renderDOM = append(renderDOM, benchMs(ms))
		var span struct{ Start, End float64 }
		tab.eval(10*time.Second, listingSpan, &span)
		listStart, listing = append(listStart, benchMs(span.Start)), append(listing, benchMs(span.End-span.Start))

		var sc struct {
			MS     float64
			Frames float64
		}
		tab.eval(time.Minute, scrollProbe(n), &sc)
		scroll = append(scroll, benchMs(sc.MS))
		frames = append(frames, sc.Frames)

		d, got := st.list(b)
		if got != n {
			b.Fatalf("the API listed %d sandboxes, want %d", got, n)
		}
		list = append(list, d)
	}
	// Reported after the loop: b.Loop's start drops what came before.
	b.ReportMetric(idleBusy, "idle-host-busy-pct")
	b.ReportMetric(float64(n), "sandboxes")
	b.ReportMetric(created.Seconds(), "create-all-s")
	report := func(name string, ds []time.Duration) {
		b.ReportMetric(benchPct(ds, 50), name+"-p50-ms")
		b.ReportMetric(benchPct(ds, 100), name+"-max-ms")
		if err := samples.Durations("dashboard-"+name, ds); err != nil {
			b.Error(err)
		}
	}
	report("signin", signin)
	report("signin-dom", signinDOM)
	report("signin-assets", signinAssets)
	report("page-fetch", fetch)
	report("table-first-rows", firstRows)
	report("table", render)
	report("table-dom", renderDOM)
	report("table-list-start", listStart)
	report("table-listing", listing)
	report("list", list)
	report("scroll", scroll)
	b.ReportMetric(slices.Max(frames), "scroll-frames-max")
}

// assetsLoaded is when the last of the page's assets (/ui/) had arrived,
// in milliseconds from the navigation's start: what of a load is the
// network's, the rest being the browser's and the dashboard's work.
const assetsLoaded = `Math.max(...performance.getEntriesByType('resource').filter((e) => new URL(e.name).pathname.startsWith('/ui/')).map((e) => e.responseEnd))`

// listingSpan is when the page asked for the first page of GET
// /v2/sandboxes and when the last one had arrived, in milliseconds from
// the navigation's start.
const listingSpan = `(() => {
  const es = performance.getEntriesByType('resource').filter((e) => new URL(e.name).pathname === '/v2/sandboxes');
  return { start: Math.min(...es.map((e) => e.startTime)), end: Math.max(...es.map((e) => e.responseEnd)) };
})()`

// hostCPU is the host's busy and total CPU time so far, in ticks.
func hostCPU(b *testing.B) (busy, total int64) {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	f := strings.Fields(line)
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total
}

func benchMs(ms float64) time.Duration { return time.Duration(ms * float64(time.Millisecond)) }

// pct is the p-th percentile of ds in milliseconds (100: the largest).
func benchPct(ds []time.Duration, p float64) float64 {
	ms := make([]float64, len(ds))
	for i, d := range ds {
		ms[i] = float64(d) / float64(time.Millisecond)
	}
	return samples.Percentile(ms, p)
}

// benchAssetRef finds the page's assets, as the browser does.
var benchAssetRef = regexp.MustCompile(`(?:src|href)="(/ui/[^"]+)"`)

// benchFetchPage is the first page's baseline: GET / and then its assets
// (gzip accepted, as a browser asks; in parallel, as a browser fetches
// them), on a new connection, bodies read to the end.
func benchFetchPage(b *testing.B, base string) time.Duration {
	b.Helper()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: time.Minute}
	get := func(path string) []byte {
		resp, err := c.Get(base + path)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("GET %s: %d %v", path, resp.StatusCode, err)
		}
		return body
	}
	t0 := time.Now()
	page := get("/")
	var wg sync.WaitGroup
	refs := benchAssetRef.FindAllSubmatch(page, -1)
	for _, m := range refs {
		wg.Go(func() { get(string(m[1])) })
	}
	wg.Wait()
	d := time.Since(t0)
	if len(refs) < 2 {
		b.Fatalf("the page names %d assets: %s", len(refs), page)
	}
	return d
}

// benchStack is a `roost up` the benchmark started.
type benchStack struct {
	url, key string
	client   *http.Client
}

// benchPorts are the loopback ports the dashboard's benchmarks listen on.
const benchPortLo, benchPortHi = 3201, 3210

// startBenchStack runs `roost up --no-prune` on a data directory of its own
// under /var/tmp (the base template taken from the test cache, so that
// nothing is built) and the first free port of 3201-3210, with team
// quotas that fit n sandboxes. It stops when b ends.
func startBenchStack(b *testing.B, n int) *benchStack {
	b.Helper()
	runtimetest.RequireRoot(b)
	roost, err := filepath.Abs(cmp.Or(os.Getenv("ROOST_BENCH_ROOST"), "../bin/roost"))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := os.Stat(roost); err != nil {
		b.Skipf("%v: run make build first", err)
	}
	templatetest.Base(b)
	data, err := os.MkdirTemp("/var/tmp", "roost-bench-dash-")
	if err != nil {
		b.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(templatetest.CacheDir(), "templates"), filepath.Join(data, "templates")); err != nil {
		b.Fatal(err)
	}
	addr := ""
	for p := benchPortLo; p <= benchPortHi && addr == ""; p++ {
		if ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p)); err == nil {
			addr = ln.Addr().String()
			ln.Close()
		}
	}
	if addr == "" {
		b.Fatalf("no free port in %d-%d", benchPortLo, benchPortHi)
	}
	k := make([]byte, 16)
	rand.Read(k)
	key := "roost_bench_" + hex.EncodeToString(k)
	m := n + 10
	quota := fmt.Sprintf("sandboxes=%d,vcpus=%d,memory-mb=%d,disk-mb=%d", m, 2*m, 512*m, 2048*m)
	var log bytes.Buffer
	cmd := exec.Command(roost, "up", "--no-prune", "--data-dir", data, "--listen", addr, "--log-level", "warn", "--team-quota", quota)
	cmd.Env = append(os.Environ(), "ROOST_API_KEY="+key)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if b.Failed() {
			b.Logf("roost up's log:\n%s", benchLastLines(log.String(), 40))
		}
		benchRemoveDataDir(b, data)
	})
	st := &benchStack{url: "http://" + addr, key: key, client: &http.Client{Timeout: 5 * time.Minute}}
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get(st.url + "/health")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("roost up does not answer on %s: %v; log:\n%s", addr, err, log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return st
}

func (st *benchStack) do(method, path string, body any) (*http.Response, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, st.url+path, r)
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-API-Key", st.key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return st.client.Do(req)
}

// createSandboxes creates n base sandboxes (an hour's timeout) through
// POST /v2/sandboxes from clients at once, and kills them when b ends.
func (st *benchStack) createSandboxes(b *testing.B, n, clients int) []string {
	b.Helper()
	var (
		mu   sync.Mutex
		ids  []string
		next atomic.Int64
		errs = make(chan error, clients)
	)
	b.Cleanup(func() { st.killAll(b, ids) })
	t0 := time.Now()
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				resp, err := st.do("POST", "/v2/sandboxes", map[string]any{"templateID": "base", "timeout": 3600})
				if err != nil {
					errs <- err
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var sb struct{ SandboxID string }
				if resp.StatusCode != http.StatusCreated || json.Unmarshal(body, &sb) != nil || sb.SandboxID == "" {
					errs <- fmt.Errorf("create: %s: %s", resp.Status, body)
					return
				}
				mu.Lock()
				ids = append(ids, sb.SandboxID)
				if len(ids)%100 == 0 {
					b.Logf("%d sandboxes in %s", len(ids), time.Since(t0).Round(time.Second))
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	return ids
}

// killAll deletes the sandboxes, 8 at once.
func (st *benchStack) killAll(b *testing.B, ids []string) {
	var next atomic.Int64
	var failed atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(len(ids)); i = next.Add(1) - 1 {
				resp, err := st.do("DELETE", "/sandboxes/"+ids[i], nil)
				if err == nil {
					resp.Body.Close()
				}
				if err != nil || resp.StatusCode/100 != 2 {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		b.Errorf("%d of %d sandboxes were not killed", f, len(ids))
	}
}

// list is the table's baseline: every page of GET /v2/sandboxes as the
// dashboard asks for them (running and paused, 100 a page), decoded.
func (st *benchStack) list(b *testing.B) (time.Duration, int) {
	b.Helper()
	t0 := time.Now()
	total, next := 0, ""
	for {
		path := "/v2/sandboxes?state=running%2Cpaused&limit=100"
		if next != "" {
			path += "&nextToken=" + next
		}
		resp, err := st.do("GET", path, nil)
		if err != nil {
			b.Fatal(err)
		}
		var page []map[string]any
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("GET %s: %s %v", path, resp.Status, err)
		}
		total += len(page)
		if next = resp.Header.Get("X-Next-Token"); next == "" {
			return time.Since(t0), total
		}
	}
}

// benchRemoveDataDir removes roost up's data directory once it has stopped:
// what is still mounted below it (the runtime's template layers, kept
// for a next start) is detached first. With a sandbox left behind, the
// directory stays: removing it would reach into the sandbox's mounts.
func benchRemoveDataDir(b *testing.B, dir string) {
	if left, _ := os.ReadDir(filepath.Join(dir, "sandboxes")); len(left) > 0 {
		b.Errorf("%s still holds %d sandboxes; left in place", dir, len(left))
		return
	}
	all, err := mountinfo.Read()
	if err != nil {
		b.Errorf("%v; %s left in place", err, dir)
		return
	}
	var mounts []string
	for _, m := range all {
		if strings.HasPrefix(m.Target, dir+"/") {
			mounts = append(mounts, m.Target)
		}
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		if err := syscall.Unmount(mounts[i], syscall.MNT_DETACH); err != nil {
			b.Errorf("unmount %s: %v; %s left in place", mounts[i], err, dir)
			return
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		b.Error(err)
	}
}

func benchLastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
