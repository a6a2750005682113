package runtimetest

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/network"
	"roost.dev/roost/runtime"
)

// NewRuntime returns a new driver of the kind under test, on this host.
type NewRuntime func(t testing.TB) runtime.Runtime

// Run is the conformance suite: every driver must pass it on a host where
// its Probe says it is available. The suite calls newRT for the driver
// under test, and again for a driver that stands for the agent after a
// restart: a new driver, on the same host, that recovers the sandboxes
// of the old.
func Run(t *testing.T, newRT NewRuntime, net *network.Manager) {
	rt := newRT(t)
	if av := rt.Probe(context.Background()); !av.Available {
		t.Skipf("%s unavailable: %s", rt.Name(), av.Reason)
	}
	t.Run("Capabilities", func(t *testing.T) {
		c := rt.Capabilities()
		_, pauser := rt.(runtime.Pauser)
		_, snapshotter := rt.(runtime.Snapshotter)
		_, forker := rt.(runtime.Forker)
		if c.Pause != pauser || c.Snapshot != snapshotter || c.Fork != forker {
			t.Errorf("capabilities %+v, but Pauser %v, Snapshotter %v, Forker %v", c, pauser, snapshotter, forker)
		}
	})
	t.Run("Lifecycle", func(t *testing.T) { lifecycle(t, rt, net) })
	t.Run("DestroyUnknown", func(t *testing.T) {
		if err := rt.Destroy(context.Background(), "no-such-sandbox"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("destroy unknown: %v, want ErrNotFound", err)
		}
	})
	t.Run("DuplicateID", func(t *testing.T) {
		sb := Start(t, rt, net, Options{})
		spec := sb.Spec
		spec.StateDir += "-again"
		if _, err := rt.Create(context.Background(), spec); !errors.Is(err, errdefs.ErrAlreadyExists) {
			t.Fatalf("second create with the same id: %v, want ErrAlreadyExists", err)
		}
	})
	t.Run("BadSpec", func(t *testing.T) {
		sb := Start(t, rt, net, Options{})
		for name, mutate := range map[string]func(*runtime.Spec){
			"no id":          func(s *runtime.Spec) { s.ID = "" },
			"missing rootfs": func(s *runtime.Spec) { s.RootFS = "/nonexistent/rootfs" },
			"missing envd":   func(s *runtime.Spec) { s.Envd = "/nonexistent/envd" },
			"negative limit": func(s *runtime.Spec) { s.Limits.MemoryMB = -1 },
		} {
			spec := sb.Spec
			spec.ID = ID()
			spec.StateDir += "-" + spec.ID
			mutate(&spec)
			if _, err := rt.Create(context.Background(), spec); !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("%s: %v, want ErrInvalid", name, err)
			}
		}
	})
	t.Run("RecoverTwice", func(t *testing.T) { recoverTwice(t, rt, newRT, net) })
	t.Run("Prune", func(t *testing.T) { prune(t, rt, newRT, net) })
	t.Run("SnapshotRestore", func(t *testing.T) { snapshotRestore(t, rt, newRT, net) })
	t.Run("CaptureFork", func(t *testing.T) { captureFork(t, rt, net) })
	t.Run("Move", func(t *testing.T) { move(t, rt, newRT, net) })
}

// waitConsole waits for text in the sandbox's console log (a VM's serial
// console may lag behind its envd's first answer).
func waitConsole(t *testing.T, stateDir, text string) {
	t.Helper()
	path := filepath.Join(stateDir, runtime.LogFile)
	var log string
	for range 100 {
		if log = readFile(path); strings.Contains(log, text) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("%s has no %s: %q", path, text, log)
}

func lifecycle(t *testing.T, rt runtime.Runtime, net *network.Manager) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sb := Start(t, rt, net, Options{})

	if got := strings.TrimSpace(sb.MustExec(t, "hostname")); got != sb.Spec.Hostname {
		t.Errorf("hostname %q, want %q", got, sb.Spec.Hostname)
	}
	if got := strings.TrimSpace(sb.MustExec(t, "id -u")); got != "0" {
		t.Errorf("envd's default user has uid %s, want 0 before /init", got)
	}
	// envd's stderr reaches the sandbox's console, which the agent
	// serves as the sandbox's log.
	waitConsole(t, sb.Spec.StateDir, `"msg":"envd listening"`)

	payload := bytes.Repeat([]byte("roost\x00\xff"), 100_000)
	if err := sb.WriteFile(ctx, "/tmp/conformance/blob", payload); err != nil {
		t.Fatal(err)
	}
	back, err := sb.ReadFile(ctx, "/tmp/conformance/blob")
	if err != nil || !bytes.Equal(back, payload) {
		t.Fatalf("file round trip: %d bytes back, err %v", len(back), err)
	}
	if got := strings.TrimSpace(sb.MustExec(t, "wc -c < /tmp/conformance/blob")); got != "700000" {
		t.Errorf("size seen inside: %s", got)
	}

	if p, ok := rt.(runtime.Pauser); ok {
		// A counter that a paused sandbox must not advance.
		sb.MustExec(t, "nohup bash -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.02; done' >/dev/null 2>&1 &")
		time.Sleep(200 * time.Millisecond)
		if err := p.Pause(ctx, sb.Spec.ID); err != nil {
			t.Fatalf("pause: %v", err)
		}
		short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
		_, err := sb.Exec(short, "true")
		cancelShort()
		if err == nil {
			t.Error("a paused sandbox ran a command")
		}
		if err := p.Resume(ctx, sb.Spec.ID); err != nil {
			t.Fatalf("resume: %v", err)
		}
		first := strings.TrimSpace(sb.MustExec(t, "cat /tmp/counter"))
		time.Sleep(200 * time.Millisecond)
		second := strings.TrimSpace(sb.MustExec(t, "cat /tmp/counter"))
		if first == second {
			t.Errorf("counter stuck at %s after resume", first)
		}
	}

	// Stats, twice (a driver may keep what it reads from open): the
	// sandbox has served envd's requests over its network and holds the
	// file written above.
	for range 2 {
		st, err := rt.Stats(ctx, sb.Spec.ID)
		if err != nil {
			t.Fatalf("stats: %v", err)
		}
		if st.MemoryBytes == 0 || st.Pids == 0 || st.VCPUs < 1 || st.MemoryWorkingSet == 0 || st.MemoryWorkingSet > st.MemoryBytes ||
			st.MemoryCache > st.MemoryBytes || st.DiskTotal == 0 || st.DiskUsed == 0 || st.DiskUsed > st.DiskTotal ||
			st.NetRxBytes == 0 || st.NetTxBytes == 0 {
			t.Errorf("implausible stats %+v", st)
		}
	}

	if err := rt.Destroy(ctx, sb.Spec.ID); err != nil {
		t.Fatalf("destroy: %v", err)
	}
	if _, err := sb.Exec(ctx, "true"); err == nil {
		t.Error("envd still answers after destroy")
	}
	if err := rt.Destroy(ctx, sb.Spec.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("second destroy: %v, want ErrNotFound", err)
	}
}
