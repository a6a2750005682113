package controlplane_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"roost.dev/roost/agent"
	"roost.dev/roost/controlplane"
	"roost.dev/roost/network"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/namespace"
	"roost.dev/roost/runtime/namespace/namespacetest"
	"roost.dev/roost/runtime/runtimetest"
	"roost.dev/roost/store"
	"roost.dev/roost/store/storetest"
	"roost.dev/roost/template/content"
	"roost.dev/roost/template/templatetest"
)

func TestMain(m *testing.M) {
	maybeRunLoadServer()        // a copy of this binary serves the PTY load test's traffic
	maybeRunLoadClient()        // and another one sends it
	maybeRunScaleFakes()        // a copy is BenchmarkControlPlaneScale's fake agents and load
	namespacetest.InstallInit() // the driver runs cmd/roost-init, found next to this binary
	os.Exit(m.Run())
}

const agentToken = "controlplane-test-agent-token"

// testenv is the whole stack in-process on loopback: a store (SQLite or
// PostgreSQL), one real agent (namespace runtime, cached base template) on
// its own port, and the control plane on another.
type testenv struct {
	t     testing.TB
	store store.Store
	cp    *controlplane.Server
	agent *agent.Manager
	// agentSrv serves the agent; closing it makes the host unreachable.
	agentSrv *httptest.Server
	srv      *httptest.Server // serves the control plane
	url      string           // the control plane's base URL
	key      string           // an API key of team "test"
}

// newTestenv starts the stack on a fresh SQLite store.
func newTestenv(t testing.TB, cfg controlplane.Config) *testenv {
	t.Helper()
	return newTestenvDB(t, cfg, storetest.SQLiteURL(t))
}

// newTestenvDB starts the stack on the store at dbURL, which must be a
// fresh, empty database (storetest hands out such URLs). A test that
// checks what the control plane keeps runs on every database with
// storetest.Run:
//
//	storetest.Run(t, func(t *testing.T, dbURL string) {
//		e := newTestenvDB(t, cfg, dbURL)
//		...
//	})
func newTestenvDB(t testing.TB, cfg controlplane.Config, dbURL string) *testenv {
	t.Helper()
	requireNamespace(t)
	return newTestenvRuntime(t, cfg, dbURL, namespaceRuntime)
}

// requireNamespace skips t where the namespace runtime cannot run.
func requireNamespace(t testing.TB) {
	t.Helper()
	runtimetest.RequireRoot(t)
	if a := namespace.Probe(); !a.Available {
		t.Skipf("namespace runtime unavailable: %s", a.Reason)
	}
}

// namespaceRuntime is the namespace runtime, its state under dataDir.
func namespaceRuntime(dataDir string, log *slog.Logger) (runtime.Runtime, error) {
	return namespace.New(namespace.Config{DataDir: filepath.Join(dataDir, "runtime", "namespace")}, log)
}

// newRuntime makes the agent's runtime driver, its state under dataDir.
type newRuntime func(dataDir string, log *slog.Logger) (runtime.Runtime, error)

// newTestenvRuntime starts the stack with the agent on the runtime
// newRT makes (the caller has checked it is available).
func newTestenvRuntime(t testing.TB, cfg controlplane.Config, dbURL string, newRT newRuntime) *testenv {
	t.Helper()
	return newTestenvAgent(t, cfg, dbURL, newRT, testSlots, nil)
}

// testSlots is how many network slots a test's agent has: other
// packages' tests run sandboxes on this host at the same time, each in a
// random window of slots of its own. 64 is room for the 16 clients of
// BenchmarkCreateThroughput and the teardowns their deletes leave
// running.
const testSlots = 64

// newTestenvAgent is newTestenvRuntime with the test's changes to the
// agent's Config (nil: none), such as a Registerer for its metrics (the
// store's go to cfg.Registerer, as roost server wires them) or warm pools,
// and slots network slots (testSlots; more for a benchmark that runs
// more sandboxes at once).
func newTestenvAgent(t testing.TB, cfg controlplane.Config, dbURL string, newRT newRuntime, slots int, configure func(*agent.Config)) *testenv {
	t.Helper()
	templatetest.Base(t) // builds the base template on first use; cached after
	level := slog.LevelDebug
	if _, bench := t.(*testing.B); bench {
		level = slog.LevelWarn // benchmarks measure; debug logging would cost time
	}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: level}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dataDir := t.TempDir()
	if cfg.Blobs == nil { // roost up's wiring: one content store, shared
		cfg.Blobs = content.NewBlobs(filepath.Join(dataDir, "blobs"))
	}

	agentCfg := agent.Config{DataDir: dataDir, Envd: runtimetest.Envd(t), Version: "test", SkipPrune: true,
		Blobs: cfg.Blobs, SharedBlobs: true, MetricsInterval: testMetricsInterval}
	if configure != nil {
		configure(&agentCfg)
	}
	m := startAgentConfig(t, agentCfg, newRT, log.With("component", "agent"), slots)
	agentSrv := httptest.NewServer(agent.NewServer(m, agent.ServerConfig{Token: agentToken}, log).Handler())
	t.Cleanup(func() {
		// Last: whatever the test left runs on this agent.
		dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer dcancel()
		for _, sb := range m.List() {
			if err := m.Destroy(dctx, sb.ID); err != nil {
				t.Errorf("cleanup: destroy %s: %v", sb.ID, err)
			}
		}
		agentSrv.Close()
		m.Close()
		unmountBelow(t, dataDir)
	})

	var storeOpts []store.Option
	if cfg.Registerer != nil {
		storeOpts = append(storeOpts, store.WithRegisterer(cfg.Registerer))
	}
	st, err := store.Open(ctx, dbURL, log.With("component", "store"), storeOpts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if cfg.Local != nil && cfg.Local.SandboxAddr == nil {
		// localAgent's marker: wire the in-process agent as roost up does.
		cfg.Local = &controlplane.LocalAgent{HostID: cfg.Local.HostID, SandboxAddr: m.SandboxAddr, Service: agent.NewService(m)}
	}
	cp, err := controlplane.New(cfg, st, log.With("component", "controlplane"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.AddHost(ctx, store.Host{ID: "host1", URL: agentSrv.URL}, agentToken); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(cp.Handler())
	runCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = cp.Run(runCtx) })
	t.Cleanup(func() {
		stop()
		wg.Wait()
		srv.Close()
		cp.Close()
	})
	key, err := cp.CreateTeamWithKey(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	return &testenv{t: t, store: st, cp: cp, agent: m, agentSrv: agentSrv, srv: srv, url: srv.URL, key: key}
}

// localAgent in a Config asks newTestenv for roost up's wiring: the
// control plane reaches the in-process agent's sandboxes directly rather
// than through the agent's HTTP proxy.
func localAgent() *controlplane.LocalAgent { return &controlplane.LocalAgent{HostID: "host1"} }

// startAgentConfig wires a Manager the way cmd/roost does, with cfg.
// Other packages' tests create sandboxes on this host at the same time
// with their own network managers, so this one uses a random window of
// slots network slots and reserves the rest.
func startAgentConfig(t testing.TB, cfg agent.Config, newRT newRuntime, log *slog.Logger, slots int) *agent.Manager {
	t.Helper()
	rt, err := newRT(cfg.DataDir, log)
	if err != nil {
		t.Fatal(err)
	}
	nw, err := network.New(network.Config{}, log)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := rand.Int(rand.Reader, big.NewInt(int64(16000-slots-2000)))
	lo := 2000 + int(n.Int64())
	for s := 1; s <= nw.Capacity(); s++ {
		if s < lo || s >= lo+slots {
			if err := nw.Reserve(s); err != nil {
				t.Fatal(err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m, err := agent.New(ctx, cfg, rt, nw, templatetest.Store(t), log)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// unmountBelow detaches every mount at or below dir, deepest first.
func unmountBelow(t testing.TB, dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Error(err)
		return
	}
	var mounts []string
	for line := range strings.SplitSeq(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			mounts = append(mounts, f[4])
		}
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		if err := unix.Unmount(mounts[i], unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mounts[i], err)
		}
	}
}

// response is an answer read whole.
type response struct {
	status int
	header http.Header
	body   []byte
}

// rawBody is a request body sent as it is, not JSON-encoded: malformed
// JSON, for one.
type rawBody string

// do sends a request to the control plane; body is JSON-encoded unless
// nil or a rawBody. hdr is pairs of header name and value.
func (e *testenv) do(method, path, key string, body any, hdr ...string) response {
	e.t.Helper()
	var rd io.Reader
	if raw, ok := body.(rawBody); ok {
		rd = strings.NewReader(string(raw))
	} else if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, e.url+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// want fails the test unless the answer has the status; a JSON error body
// must carry the same code.
func (r response) want(t testing.TB, status int) response {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	if status >= 400 {
		var e struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		}
		if err := json.Unmarshal(r.body, &e); err != nil || e.Code != status || e.Message == "" {
			t.Fatalf("error body %s: want {code: %d, message}", r.body, status)
		}
	}
	return r
}

func (r response) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}
