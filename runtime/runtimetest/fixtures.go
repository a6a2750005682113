package runtimetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/network"
	"roost.dev/roost/runtime"
	"roost.dev/roost/template/templatetest"
)

// RequireRoot skips t unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("sandboxes need root")
	}
}

// Network returns a network manager for tests; its leftovers are pruned
// when the test ends.
func Network(t testing.TB) *network.Manager {
	t.Helper()
	m, err := network.New(network.Config{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("network: %v", err)
	}
	return m
}

// ID returns a fresh sandbox ID.
func ID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return "t" + hex.EncodeToString(b)
}

// Sandbox is one sandbox a test started, with what it needs to reach it.
type Sandbox struct {
	Spec     runtime.Spec
	Instance runtime.Instance
	Slot     int
	Envd     string // http://addr:port

	rt     runtime.Runtime
	net    *network.Manager
	closed bool
}

// Options adjust a test sandbox.
type Options struct {
	Limits   runtime.Limits
	Internet bool
	// RootFS is the template tree; empty means the base template.
	RootFS string
	// Fork is a capture (runtime.Forker) to fork instead of booting.
	Fork string
}

// Start creates a sandbox with rt and waits until its envd answers. The
// sandbox and its network are destroyed when the test ends.
func Start(t testing.TB, rt runtime.Runtime, net *network.Manager, opts Options) *Sandbox {
	t.Helper()
	sb := StartBare(t, rt, net, opts)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		_ = sb.Close(ctx)
	})
	return sb
}

// StartBare is Start without the cleanup: the caller calls Close.
func StartBare(t testing.TB, rt runtime.Runtime, net *network.Manager, opts Options) *Sandbox {
	t.Helper()
	sb, err := TryStart(t, rt, net, opts)
	if err != nil {
		t.Fatal(err)
	}
	return sb
}

// TryStart is StartBare that returns the driver's refusal (a create or
// envd failure, the sandbox and its network gone) instead of failing the
// test: for cases where refusing is a right answer.
func TryStart(t testing.TB, rt runtime.Runtime, net *network.Manager, opts Options) (*Sandbox, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rootfs := opts.RootFS
	if rootfs == "" {
		rootfs = templatetest.Base(t).RootFS
	}
	id := ID()
	slot, err := net.Acquire()
	if err != nil {
		t.Fatal(err)
	}
	nw, err := net.Setup(ctx, id, slot, opts.Internet)
	if err != nil {
		net.Release(slot)
		t.Fatal(err)
	}
	stateDir := filepath.Join(t.TempDir(), id)
	spec := runtime.Spec{
		ID: id, StateDir: stateDir, RootFS: rootfs, Envd: Envd(t), Hostname: id,
		Limits: opts.Limits, Network: nw,
	}
	sb := &Sandbox{Spec: spec, Slot: slot, rt: rt, net: net}
	var inst runtime.Instance
	if opts.Fork != "" {
		inst, err = rt.(runtime.Forker).Fork(ctx, spec, opts.Fork)
	} else {
		inst, err = rt.Create(ctx, spec)
	}
	if err != nil {
		sb.Close(ctx)
		return nil, fmt.Errorf("create: %w", err)
	}
	sb.Instance, sb.Envd = inst, "http://"+inst.Envd.String()
	if err := WaitHealthy(ctx, sb.Envd); err != nil {
		log := readFile(filepath.Join(stateDir, runtime.LogFile))
		sb.Close(ctx)
		return nil, fmt.Errorf("envd: %w (init log: %s)", err, log)
	}
	return sb, nil
}

// Close destroys the sandbox and its network. Safe to call twice.
func (s *Sandbox) Close(ctx context.Context) error {
	if s.closed {
		return nil
	}
	s.closed = true
	err := s.rt.Destroy(ctx, s.Spec.ID)
	if errors.Is(err, errdefs.ErrNotFound) {
		err = nil
	}
	if terr := s.net.Teardown(ctx, s.Spec.ID, s.Slot); terr != nil && err == nil {
		err = terr
	}
	s.net.Release(s.Slot)
	return err
}

// WaitHealthy polls envd's /health until it answers 204.
func WaitHealthy(ctx context.Context, base string) error {
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get(base + "/health")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("envd at %s not healthy: %v (last error %v)", base, ctx.Err(), err)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// WaitGone waits until the sandbox's envd no longer answers (refused, or
// not within half a second).
func (s *Sandbox) WaitGone(ctx context.Context) error {
	client := &http.Client{Timeout: 500 * time.Millisecond}
	for {
		resp, err := client.Get(s.Envd + "/health")
		if err != nil {
			return nil
		}
		resp.Body.Close()
		select {
		case <-ctx.Done():
			return fmt.Errorf("envd at %s still answers: %w", s.Envd, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// WriteLegacyState writes st to stateDir/name as drivers wrote their own
// state before the agent kept it (agent records of version 1): the
// state's JSON object, with its version inside. A driver given no state
// reads it.
func WriteLegacyState(t testing.TB, stateDir, name string, st runtime.DriverState) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(st.Data, &m); err != nil {
		t.Fatal(err)
	}
	m["version"] = st.Version
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stateDir, name), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}
