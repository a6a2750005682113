package controlplane_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"roost.dev/roost/controlplane"
)

// The keystroke-echo load test: a terminal's echo latency through the
// whole path (WebSocket client → control plane → agent → envd → bash →
// back), idle and while the same sandbox serves a heavy proxy load: an
// HTTP server inside answering loadRate requests/s through the control
// plane's proxy, and a WebSocket through the proxy streaming data without
// pause.

// loadServerEnv makes this test binary, copied into a sandbox, the load
// target: an HTTP server on the address the variable names.
const loadServerEnv = "ROOST_TEST_LOAD_SERVER"

const (
	loadPort   = 8080
	loadRate   = 1000                 // proxied requests per second
	loadChunk  = 16 << 10             // bytes per WebSocket message
	loadPeriod = 2 * time.Millisecond // between WebSocket messages: 8 MB/s
)

// maybeRunLoadServer serves, and never returns, when this binary runs as
// the sandbox's load server.
func maybeRunLoadServer() {
	addr := os.Getenv(loadServerEnv)
	if addr == "" {
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello\n")
	})
	mux.HandleFunc("GET /stream", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctx := c.CloseRead(r.Context())
		chunk := bytes.Repeat([]byte("x"), loadChunk)
		tick := time.NewTicker(loadPeriod)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if err := c.Write(ctx, websocket.MessageBinary, chunk); err != nil {
					return
				}
			}
		}
	})
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintln(os.Stderr, srv.ListenAndServe())
	os.Exit(1)
}

// createSandbox creates a sandbox for a benchmark or test.
func (e *testenv) createSandbox(tb testing.TB) string {
	tb.Helper()
	var c created
	e.do("POST", "/v2/sandboxes", e.key, map[string]any{"templateID": "base", "timeout": 900}).
		want(tb, http.StatusCreated).decode(tb, &c)
	return c.SandboxID
}

// startLoadServer copies this test binary into the sandbox and runs it as
// the load server, then waits until the proxy reaches it.
func (e *testenv) startLoadServer(tb testing.TB, id string) {
	tb.Helper()
	self, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	f, err := os.Open(self)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "PUT", e.url+"/v1/sandboxes/"+id+"/files?path=/tmp/loadserver", f)
	req.Header.Set("X-API-Key", e.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("upload load server: %s", resp.Status)
	}
	cmd := fmt.Sprintf("chmod +x /tmp/loadserver && %s=0.0.0.0:%d nohup /tmp/loadserver >/tmp/loadserver.log 2>&1 &", loadServerEnv, loadPort)
	e.do("POST", "/v1/sandboxes/"+id+"/exec", e.key, map[string]any{"cmd": cmd}).want(tb, http.StatusOK)
	c := &http.Client{}
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := c.Do(proxied(ctx, e.url, id, "/hello"))
		if err == nil {
			r.Body.Close()
			if r.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("load server did not come up: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// proxied is a GET to the sandbox's load server through the control
// plane's proxy at base (the header form, as E2B SDKs send it).
func proxied(ctx context.Context, base, id, path string) *http.Request {
	req, _ := http.NewRequestWithContext(ctx, "GET", base+path, nil)
	req.Header.Set("E2b-Sandbox-Id", id)
	req.Header.Set("E2b-Sandbox-Port", fmt.Sprint(loadPort))
	return req
}

// loadStats is what a load run achieved.
type loadStats struct {
	Requests, Failures int64
	Streamed           int64 // WebSocket bytes received
	Elapsed            time.Duration
}

func (s loadStats) rate() float64 { return float64(s.Requests) / s.Elapsed.Seconds() }

// loadClientEnv makes this test binary the load's clients: "URL ID" of the
// control plane and the sandbox. It runs until its stdin closes, then
// prints its loadStats as JSON. The clients are a process of their own,
// at a lower priority, because in production they are browsers elsewhere,
// not competitors of roost for this host's cores.
const loadClientEnv = "ROOST_TEST_LOAD_CLIENT"

// maybeRunLoadClient generates load, and exits, when this binary runs as
// the load's clients.
func maybeRunLoadClient() {
	v := os.Getenv(loadClientEnv)
	if v == "" {
		return
	}
	base, id, _ := strings.Cut(v, " ")
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	st := generateLoad(ctx, base, id)
	if err := json.NewEncoder(os.Stdout).Encode(st); err != nil {
		os.Exit(1)
	}
	os.Exit(0)
}

// generateLoad drives the proxy load until ctx ends: requests paced at
// loadRate over keep-alive connections, and one WebSocket stream.
func generateLoad(ctx context.Context, base, id string) loadStats {
	var requests, failures, streamed atomic.Int64
	var wg sync.WaitGroup
	began := time.Now()
	// Tokens for loadRate requests a second, released every millisecond
	// as many as the time since the start allows (a smooth pace, as many
	// independent clients make, not bursts at a coarse tick); a backlog is
	// kept (up to a second's worth), so the rate is what the proxy could
	// answer, not what the pacing let through.
	tokens := make(chan struct{}, loadRate)
	wg.Go(func() {
		defer close(tokens)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		released := 0
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				due := int(time.Since(began) * loadRate / time.Second)
				for ; released < due; released++ {
					select {
					case tokens <- struct{}{}:
					default:
					}
				}
			}
		}
	})
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	client := &http.Client{Transport: tr}
	for range 16 {
		wg.Go(func() {
			for range tokens {
				resp, err := client.Do(proxied(ctx, base, id, "/hello"))
				if err != nil {
					if ctx.Err() == nil {
						failures.Add(1)
					}
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					requests.Add(1)
				} else {
					failures.Add(1)
				}
			}
		})
	}
	wg.Go(func() {
		h := http.Header{"E2b-Sandbox-Id": {id}, "E2b-Sandbox-Port": {fmt.Sprint(loadPort)}}
		c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/stream", &websocket.DialOptions{HTTPHeader: h})
		if err != nil {
			if ctx.Err() == nil {
				failures.Add(1)
			}
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(1 << 20)
		for {
			_, b, err := c.Read(ctx)
			if err != nil {
				return
			}
			streamed.Add(int64(len(b)))
		}
	})
	wg.Wait()
	tr.CloseIdleConnections()
	return loadStats{Requests: requests.Load(), Failures: failures.Load(), Streamed: streamed.Load(), Elapsed: time.Since(began)}
}

// runLoad starts the load's clients (this binary, niced) and returns the
// function that stops them and reports what they achieved.
func (e *testenv) runLoad(tb testing.TB, id string) func() loadStats {
	tb.Helper()
	self, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command("nice", "-n", "10", self)
	cmd.Env = append(os.Environ(), loadClientEnv+"="+e.url+" "+id)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	return func() loadStats {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			tb.Fatalf("load clients: %v: %s", err, out.Bytes())
		}
		var st loadStats
		if err := json.Unmarshal(out.Bytes(), &st); err != nil {
			tb.Fatalf("load clients' report %q: %v", out.Bytes(), err)
		}
		return st
	}
}

// terminal is a WebSocket PTY whose output is watched for echoes.
type terminal struct {
	c      *websocket.Conn
	ctx    context.Context
	arrive chan []byte // output frames
}

func (e *testenv) openTerminal(tb testing.TB, id string) *terminal {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	h := http.Header{"X-Api-Key": {e.key}}
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.url, "http")+"/v1/sandboxes/"+id+"/pty", &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.CloseNow() })
	t := &terminal{c: c, ctx: ctx, arrive: make(chan []byte, 1024)}
	go func() {
		defer close(t.arrive)
		for {
			typ, b, err := c.Read(ctx)
			if err != nil {
				return
			}
			if typ == websocket.MessageBinary && len(b) > 1 {
				t.arrive <- b[1:]
			}
		}
	}()
	t.send(tb, "PS1='$ '; echo ready-$((40+2))\r")
	t.await(tb, "ready-42", 30*time.Second)
	return t
}

func (t *terminal) send(tb testing.TB, s string) {
	if err := t.c.Write(t.ctx, websocket.MessageBinary, append([]byte{0}, s...)); err != nil {
		tb.Fatal(err)
	}
}

// await reads output until it contains s.
func (t *terminal) await(tb testing.TB, s string, within time.Duration) {
	tb.Helper()
	var seen []byte
	timer := time.NewTimer(within) // a hang guard, not a measurement
	defer timer.Stop()
	for !bytes.Contains(seen, []byte(s)) {
		select {
		case b, ok := <-t.arrive:
			if !ok {
				tb.Fatalf("terminal closed waiting for %q", s)
			}
			seen = append(seen, b...)
		case <-timer.C:
			tb.Fatalf("no %q within %v; output %q", s, within, seen)
		}
	}
}

// drain discards output for d.
func (t *terminal) drain(d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case <-t.arrive:
		case <-timer.C:
			return
		}
	}
}

// echoes types n keystrokes, one at a time, and returns how long each took
// to come back.
func (t *terminal) echoes(tb testing.TB, n int) []time.Duration {
	tb.Helper()
	lat := make([]time.Duration, 0, n)
	const line = 60 // keystrokes before the line is cleared
	for i := range n {
		if i > 0 && i%line == 0 {
			t.send(tb, "\x15") // ^U: clear the line, unmeasured
			t.drain(20 * time.Millisecond)
		}
		key := byte('a' + i%26)
		start := time.Now()
		t.send(tb, string(key))
		t.await(tb, string(key), 10*time.Second)
		lat = append(lat, time.Since(start))
	}
	t.send(tb, "\x15")
	t.drain(20 * time.Millisecond)
	return lat
}

// quantile of sorted durations.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(float64(len(sorted))*q))]
}

// echoRun is one measurement: idle, then under load.
type echoRun struct {
	idle, load []time.Duration
	stats      loadStats
}

func measureEcho(tb testing.TB, e *testenv, id string, n int) echoRun {
	term := e.openTerminal(tb, id)
	term.echoes(tb, 20) // warm the path
	var r echoRun
	r.idle = term.echoes(tb, n)
	wait := e.runLoad(tb, id)
	time.Sleep(time.Second) // let the load reach its pace
	r.load = term.echoes(tb, n)
	r.stats = wait()
	slices.Sort(r.idle)
	slices.Sort(r.load)
	return r
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// TestPTYEchoUnderLoad runs the load test briefly: every keystroke comes
// back, and the load really ran (proxied requests answered, the stream
// flowed). Its latencies are logged, not asserted: make bench measures.
func TestPTYEchoUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("a load test")
	}
	e := newTestenv(t, controlplane.Config{Local: localAgent()}) // as roost up runs
	id := e.createSandbox(t)
	e.startLoadServer(t, id)
	r := measureEcho(t, e, id, 100)
	t.Logf("echo idle p50 %.2f ms p99 %.2f ms; under load p50 %.2f ms p99 %.2f ms; load %.0f req/s, %d failed, %.1f MB streamed",
		ms(quantile(r.idle, 0.5)), ms(quantile(r.idle, 0.99)), ms(quantile(r.load, 0.5)), ms(quantile(r.load, 0.99)),
		r.stats.rate(), r.stats.Failures, float64(r.stats.Streamed)/1e6)
	if len(r.load) != 100 || r.stats.Requests == 0 || r.stats.Streamed == 0 {
		t.Fatalf("load did not run: %+v", r.stats)
	}
	if r.stats.Failures > 0 {
		t.Errorf("%d proxied requests failed", r.stats.Failures)
	}
}

// BenchmarkPTYEcho measures keystroke echo latency, b.N keystrokes idle
// and b.N under load, and the load it ran against. With ROOST_BENCH_OUT set
// it writes the samples for make bench's charts.
func BenchmarkPTYEcho(b *testing.B) {
	e := newTestenv(b, controlplane.Config{Local: localAgent()}) // as roost up runs
	id := e.createSandbox(b)
	e.startLoadServer(b, id)
	b.ResetTimer()
	r := measureEcho(b, e, id, max(b.N, 200))
	b.StopTimer()
	b.ReportMetric(ms(quantile(r.idle, 0.5)), "idle-p50-ms")
	b.ReportMetric(ms(quantile(r.idle, 0.99)), "idle-p99-ms")
	b.ReportMetric(ms(quantile(r.load, 0.5)), "load-p50-ms")
	b.ReportMetric(ms(quantile(r.load, 0.99)), "load-p99-ms")
	b.ReportMetric(r.stats.rate(), "load-req/s")
	b.ReportMetric(float64(r.stats.Streamed)/1e6/r.stats.Elapsed.Seconds(), "load-stream-MB/s")
	b.ReportMetric(float64(r.stats.Failures), "load-failures")
	writeSamples(b, "pty-echo-idle", r.idle)
	writeSamples(b, "pty-echo-load", r.load)
}

// writeSamples writes latencies in milliseconds to $ROOST_BENCH_OUT/name.json.
func writeSamples(b *testing.B, name string, lat []time.Duration) {
	dir := os.Getenv("ROOST_BENCH_OUT")
	if dir == "" {
		return
	}
	v := struct {
		Name    string    `json:"name"`
		Unit    string    `json:"unit"`
		Samples []float64 `json:"samples"`
	}{Name: name, Unit: "ms"}
	for _, d := range lat {
		v.Samples = append(v.Samples, ms(d))
	}
	data, err := json.Marshal(v)
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, name+".json"), data, 0o644)
	}
	if err != nil {
		b.Error(err)
	}
}
