// Package testenv starts the real roost stack in-process for end-to-end
// tests: a host agent with the namespace runtime (real sandboxes), the
// control plane on SQLite, and its API and proxy on a loopback port — what
// `roost up` runs. It builds the sandbox init (cmd/roost-init) for the
// driver with the go tool, once per test binary.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"math/big"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"roost.dev/roost/agent"
	"roost.dev/roost/controlplane"
	"roost.dev/roost/mountinfo"
	"roost.dev/roost/network"
	"roost.dev/roost/runtime/namespace"
	"roost.dev/roost/runtime/namespace/namespacetest"
	"roost.dev/roost/runtime/runtimetest"
	"roost.dev/roost/store"
	"roost.dev/roost/template/content"
	"roost.dev/roost/template/templatetest"
)

// Env is a running stack.
type Env struct {
	URL    string // the control plane: REST API and proxy
	APIKey string // a key of the env's team
	Store  store.Store
	CP     *controlplane.Server
}

// Start starts the stack for t and stops it when t ends; the sandboxes it
// made are destroyed. It skips t where sandboxes cannot run (not root, no
// namespace runtime, no base template).
func Start(t testing.TB) *Env {
	t.Helper()
	runtimetest.RequireRoot(t)
	if a := namespace.Probe(); !a.Available {
		t.Skipf("namespace runtime unavailable: %s", a.Reason)
	}
	templatetest.Base(t)
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	dataDir := t.TempDir()
	nsDir := filepath.Join(dataDir, "runtime", "namespace")
	rt, err := namespace.New(namespace.Config{DataDir: nsDir, Init: namespacetest.Init(t)}, log)
	if err != nil {
		t.Fatal(err)
	}
	nw, err := network.New(network.Config{}, log)
	if err != nil {
		t.Fatal(err)
	}
	// Other packages' tests run sandboxes on this host at the same time:
	// use a window of slots of our own, and never prune.
	n, _ := rand.Int(rand.Reader, big.NewInt(14000))
	lo := 2000 + int(n.Int64())
	for s := 1; s <= nw.Capacity(); s++ {
		if s < lo || s >= lo+64 {
			if err := nw.Reserve(s); err != nil {
				t.Fatal(err)
			}
		}
	}
	// One content store for both, as roost up has (snapshots, builds).
	blobs := content.NewBlobs(filepath.Join(dataDir, "blobs"))
	m, err := agent.New(ctx, agent.Config{DataDir: dataDir, Envd: runtimetest.Envd(t), Version: "testenv", SkipPrune: true, Blobs: blobs, SharedBlobs: true},
		rt, nw, templatetest.Store(t), log)
	if err != nil {
		t.Fatal(err)
	}
	token := randomHex(16)
	agentSrv := httptest.NewServer(agent.NewServer(m, agent.ServerConfig{Token: token}, log).Handler())

	st, err := store.Open(ctx, "sqlite://"+filepath.Join(dataDir, "roost.db"), log)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := controlplane.New(controlplane.Config{Blobs: blobs}, st, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.AddHost(ctx, store.Host{ID: "local", URL: agentSrv.URL}, token); err != nil {
		t.Fatal(err)
	}
	key, err := cp.CreateTeamWithKey(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(cp.Handler())
	srv.Config.ReadHeaderTimeout = 10 * time.Second
	srv.Start()
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = cp.Run(runCtx)
	}()
	t.Cleanup(func() {
		stop()
		<-done
		srv.Close()
		cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
		defer ccancel()
		for _, sb := range m.List() {
			_ = m.Destroy(cctx, sb.ID)
		}
		agentSrv.Close()
		m.Close()
		cp.Close()
		st.Close()
		// The driver's idmapped template mounts live under dataDir; the
		// temporary directory cannot go while they are mounted.
		if ms, err := mountinfo.Read(); err == nil {
			for _, mt := range ms {
				if strings.HasPrefix(mt.Target, nsDir+"/") {
					_ = unix.Unmount(mt.Target, unix.MNT_DETACH)
				}
			}
		}
	})
	return &Env{URL: srv.URL, APIKey: key, Store: st, CP: cp}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
