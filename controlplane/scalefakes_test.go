package controlplane_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
	"roost.dev/roost/gen/roost/hostagent/v1/hostagentv1connect"
)

// BenchmarkControlPlaneScale's other side: its fake agents and its load.
// The issue asks for an in-process fake agent (no real sandboxes), and
// the fakes are that: this package's code, a map where an agent has
// sandboxes. They are hosted in a copy of the test binary, not in the
// benchmark's process, so that the control plane's CPU is its process's
// as the kernel counts it. Beside the control plane they shared its
// garbage-collected heap (their allocations set when it collected, and
// its share of the collector's work was a guess) and a profile split by
// goroutine labels caught only 70-80 % of what getrusage counted.

// scaleFakesEnv makes this test binary the fakes: "hosts perHost apiURL
// key" (hosts fake agents, each listing perHost seeded sandboxes; the
// control plane's API and the load's API key). It prints "agent NAME
// URL" for each agent and then "ready", and reads commands on stdin:
// "load" starts the heartbeats and creates, "measure" starts the
// measured window, "stop" ends it and prints a scaleReport as JSON.
const scaleFakesEnv = "ROOST_TEST_SCALE_FAKES"

// maybeRunScaleFakes runs the fakes, and exits, when this binary runs
// as them.
func maybeRunScaleFakes() {
	v := os.Getenv(scaleFakesEnv)
	if v == "" {
		return
	}
	if err := runScaleFakes(v, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "scale fakes:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// scaleConfig is what the fakes are told by scaleFakesEnv.
type scaleConfig struct {
	hosts, perHost int
	api, key       string
}

// scaleReport is what the fakes saw in the measured window.
type scaleReport struct {
	CPU      time.Duration // the fakes' process, user and system
	P50, P99 time.Duration // of the creates
	Creates  int
	Failed   int
	Err      string // the first failure
}

func runScaleFakes(v string, in io.Reader, out io.Writer) error {
	var c scaleConfig
	if _, err := fmt.Sscan(v, &c.hosts, &c.perHost, &c.api, &c.key); err != nil {
		return fmt.Errorf("%s %q: %w", scaleFakesEnv, v, err)
	}
	for i := range c.hosts {
		a := newFakeAgent(i, c)
		_, h := hostagentv1connect.NewHostAgentServiceHandler(a)
		srv := httptest.NewServer(h)
		defer srv.Close()
		fmt.Fprintf(out, "agent %s %s\n", a.name, srv.URL)
	}
	fmt.Fprintln(out, "ready")
	l := &scaleLoad{c: c}
	cmds := bufio.NewScanner(in)
	for cmds.Scan() {
		switch cmds.Text() {
		case "load":
			l.start()
		case "measure":
			l.measure()
		case "stop":
			return json.NewEncoder(out).Encode(l.stop())
		}
	}
	return errors.New("stdin closed before stop")
}

// fakeAgent is a host agent without sandboxes: creates and destroys
// change a map, which it lists.
type fakeAgent struct {
	hostagentv1connect.UnimplementedHostAgentServiceHandler
	name string
	mu   sync.Mutex // guards sbs
	sbs  map[string]*hostagentv1.Sandbox
}

// newFakeAgent is fake host i with the sandboxes seedSandboxes gives it.
func newFakeAgent(i int, c scaleConfig) *fakeAgent {
	a := &fakeAgent{name: fakeHostName(i), sbs: map[string]*hostagentv1.Sandbox{}}
	for n := i; n < c.hosts*c.perHost; n += c.hosts {
		a.add(seedID(n))
	}
	return a
}

// fakeHostName and fakeHostToken are fake host i's ID and heartbeat
// token, which both sides of the benchmark derive.
func fakeHostName(i int) string  { return fmt.Sprintf("host%03d", i) }
func fakeHostToken(i int) string { return fmt.Sprintf("fake-token-%03d", i) }

// seedID is the ID of seeded sandbox n, which is on host n % hosts.
func seedID(n int) string { return fmt.Sprintf("seed%07d", n) }

func (f *fakeAgent) GetHostInfo(context.Context, *connect.Request[hostagentv1.GetHostInfoRequest]) (*connect.Response[hostagentv1.GetHostInfoResponse], error) {
	return connect.NewResponse(&hostagentv1.GetHostInfoResponse{Host: &hostagentv1.HostInfo{
		Hostname: f.name, Runtime: "namespace", Capacity: &hostagentv1.Capacity{Cpus: 64, MemoryMb: 1 << 20, MaxSandboxes: 5000},
	}}), nil
}

func (f *fakeAgent) add(id string) *hostagentv1.Sandbox {
	f.mu.Lock()
	defer f.mu.Unlock()
	sb := &hostagentv1.Sandbox{SandboxId: id, Template: "base", State: hostagentv1.SandboxState_SANDBOX_STATE_RUNNING,
		Limits: &hostagentv1.Limits{Vcpus: 1, MemoryMb: 64, DiskMb: 512}, StartedAt: timestamppb.Now()}
	f.sbs[id] = sb
	return sb
}

func (f *fakeAgent) CreateSandbox(_ context.Context, r *connect.Request[hostagentv1.CreateSandboxRequest]) (*connect.Response[hostagentv1.CreateSandboxResponse], error) {
	return connect.NewResponse(&hostagentv1.CreateSandboxResponse{Sandbox: f.add(r.Msg.GetSandboxId())}), nil
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

// scaleLoad is the benchmark's load: every host's heartbeats, every 5 s,
// and 50 creates a second.
type scaleLoad struct {
	c      scaleConfig
	cancel context.CancelFunc
	wg     sync.WaitGroup // the heartbeats, the creates' pacer and the creates

	mu     sync.Mutex // guards the fields below
	cpu0   time.Duration
	lat    []time.Duration
	failed int
	err    string
}

func (l *scaleLoad) start() {
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	for i := range l.c.hosts {
		l.wg.Go(func() { heartbeat(ctx, l.c.api, fakeHostName(i), fakeHostToken(i)) })
	}
	l.wg.Go(func() { l.creates(ctx) })
}

// creates starts a create every 20 ms (50/s) until ctx ends, each in a
// goroutine of its own: a slow answer does not slow the pace.
func (l *scaleLoad) creates(ctx context.Context) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		l.wg.Go(func() {
			begin := time.Now()
			err := create(ctx, l.c.api, l.c.key)
			l.done(ctx, time.Since(begin), err)
		})
	}
}

func (l *scaleLoad) done(ctx context.Context, d time.Duration, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case err == nil:
		l.lat = append(l.lat, d)
	case ctx.Err() == nil:
		if l.failed++; l.err == "" {
			l.err = err.Error()
		}
	}
}

// measure starts the measured window: what came before is forgotten.
func (l *scaleLoad) measure() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lat, l.failed, l.err, l.cpu0 = nil, 0, "", processCPU()
}

func (l *scaleLoad) stop() scaleReport {
	l.mu.Lock()
	r := scaleReport{CPU: processCPU() - l.cpu0, Creates: len(l.lat), Failed: l.failed, Err: l.err}
	lat := slices.Sorted(slices.Values(l.lat))
	l.mu.Unlock()
	l.cancel()
	l.wg.Wait()
	if len(lat) > 0 {
		r.P50, r.P99 = lat[len(lat)/2], lat[len(lat)*99/100]
	}
	return r
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
