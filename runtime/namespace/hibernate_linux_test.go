package namespace_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/bench/samples"
	"roost.dev/roost/cgroup"
	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/namespace"
	"roost.dev/roost/runtime/runtimetest"
)

// needCRIU skips t when the host has no CRIU the driver can use.
func needCRIU(t testing.TB, d *namespace.Driver) {
	t.Helper()
	if err := d.CheckCRIU(); err != nil {
		t.Skipf("no CRIU: %v", err)
	}
}

// sandboxMemory is the memory the host's cgroup charges sandbox id; 0
// when it has no cgroup.
func sandboxMemory(t testing.TB, id string) uint64 {
	t.Helper()
	h, err := cgroup.Detect()
	if err != nil {
		t.Fatal(err)
	}
	g, err := h.Load("roost/" + id)
	if err != nil {
		return 0
	}
	st, err := g.Stats()
	if err != nil {
		return 0
	}
	return st.MemoryBytes
}

// TestHibernate hibernates a paused sandbox with a process writing to a
// file, a shell on a PTY, a TCP listener and a file in /tmp, and restores
// it: in the driver that hibernated it, then in a new driver (an agent
// restart) on a new network namespace (a host reboot: mounts and netns
// gone).
func TestHibernate(t *testing.T) {
	d := newDriver(t)
	needCRIU(t, d)
	net := runtimetest.Network(t)
	sb := runtimetest.Start(t, d, net, runtimetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sb.MustExec(t, `echo kept > /tmp/kept
nohup bash -c 'while :; do date +%s%N >> /root/ticks; sleep 0.05; done' >/dev/null 2>&1 &
nohup script -qfc 'bash -c "tty > /tmp/tty; echo \$\$ > /tmp/ptypid; exec sleep 1000"' /dev/null >/dev/null 2>&1 &
nohup python3 -m http.server 8080 --bind 127.0.0.1 --directory /tmp >/dev/null 2>&1 &
for i in $(seq 50); do test -s /tmp/ptypid && curl -sf localhost:8080/kept >/dev/null && break; sleep 0.1; done`)
	if got := strings.TrimSpace(sb.MustExec(t, "cat /tmp/tty")); !strings.HasPrefix(got, "/dev/pts/") {
		t.Fatalf("the shell's terminal is %q", got)
	}
	ptyPid := strings.TrimSpace(sb.MustExec(t, "cat /tmp/ptypid"))

	var rt runtime.Snapshotter = d
	for round, fresh := range []bool{false, true} {
		if err := rt.(runtime.Pauser).Pause(ctx, sb.Spec.ID); err != nil {
			t.Fatal(err)
		}
		before := sandboxMemory(t, sb.Spec.ID)
		st, err := rt.Snapshot(ctx, sb.Spec.ID)
		if err != nil {
			t.Fatalf("round %d: hibernate: %v\n%s", round, err, criuLog(sb.Spec.StateDir))
		}
		after := sandboxMemory(t, sb.Spec.ID)
		if after*10 > before {
			t.Errorf("round %d: hibernated sandbox holds %d bytes (running: %d)", round, after, before)
		}
		t.Logf("round %d: memory running %d MiB, hibernated %d bytes; images %s", round, before>>20, after, du(t, filepath.Join(sb.Spec.StateDir, "hibernation")))
		if err := sb.WaitGone(ctx); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if fresh {
			// An agent restart, then a reboot: a new network namespace.
			d2 := newDriver(t)
			if _, err := d2.Recover(ctx, sb.Spec, st); err != nil {
				t.Fatalf("round %d: recover a hibernated sandbox: %v", round, err)
			}
			if _, err := d2.Stats(ctx, sb.Spec.ID); !errors.Is(err, errdefs.ErrConflict) {
				t.Errorf("round %d: stats of a hibernated sandbox: %v, want ErrConflict", round, err)
			}
			if err := net.Teardown(ctx, sb.Spec.ID, sb.Slot); err != nil {
				t.Fatal(err)
			}
			nw, err := net.Setup(ctx, sb.Spec.ID, sb.Slot, false)
			if err != nil {
				t.Fatal(err)
			}
			sb.Spec.Network = nw
			rt = d2
		}
		inst, err := rt.Restore(ctx, sb.Spec, st)
		if err != nil {
			t.Fatalf("round %d: restore: %v", round, err)
		}
		sb.Instance, sb.Envd = inst, "http://"+inst.Envd.String()
		if err := runtimetest.WaitHealthy(ctx, sb.Envd); err != nil {
			t.Fatalf("round %d: %v (log: %s)", round, err, readLog(sb.Spec.StateDir))
		}
		ticks := func() int {
			n, _ := strconv.Atoi(strings.TrimSpace(sb.MustExec(t, "wc -l < /root/ticks")))
			return n
		}
		n := ticks()
		time.Sleep(300 * time.Millisecond)
		if ticks() <= n {
			t.Errorf("round %d: the writer stopped", round)
		}
		got := sb.MustExec(t, "cat /tmp/kept; kill -0 "+ptyPid+" && readlink /proc/"+ptyPid+"/fd/0; curl -sf localhost:8080/kept")
		if want := "kept\n/dev/pts/"; !strings.HasPrefix(got, want) || !strings.HasSuffix(got, "kept\n") {
			t.Errorf("round %d: after restore: %q", round, got)
		}
	}
	if err := rt.(runtime.Runtime).Destroy(ctx, sb.Spec.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(sb.Spec.StateDir, "hibernation")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("images after destroy: %v", err)
	}
}

// TestHibernateDestroy: a hibernated sandbox's images go with it, and
// Prune keeps those of sandboxes it is told to keep.
func TestHibernateDestroy(t *testing.T) {
	d := newDriver(t)
	needCRIU(t, d)
	net := runtimetest.Network(t)
	sb := runtimetest.Start(t, d, net, runtimetest.Options{})
	ctx := context.Background()
	if _, err := d.Snapshot(ctx, sb.Spec.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Snapshot(ctx, sb.Spec.ID); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("second hibernate: %v, want ErrConflict", err)
	}
	images := filepath.Join(sb.Spec.StateDir, "hibernation")
	if err := newDriver(t).Prune(ctx, []string{sb.Spec.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(images); err != nil {
		t.Fatalf("prune removed a kept sandbox's images: %v", err)
	}
	if err := d.Destroy(ctx, sb.Spec.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(images); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("images after destroy: %v", err)
	}
}

// TestHibernateUnsupported: a sandbox holding what CRIU cannot dump (an
// MPTCP socket, which Go programs listen on by default since Go 1.24) is
// refused with ErrUnsupported and left paused with its processes.
func TestHibernateUnsupported(t *testing.T) {
	d := newDriver(t)
	needCRIU(t, d)
	net := runtimetest.Network(t)
	sb := runtimetest.Start(t, d, net, runtimetest.Options{})
	ctx := context.Background()
	holdMPTCP(t, sb)
	if err := d.Pause(ctx, sb.Spec.ID); err != nil {
		t.Fatal(err)
	}
	_, err := d.Snapshot(ctx, sb.Spec.ID)
	if !errors.Is(err, errdefs.ErrUnsupported) {
		t.Fatalf("hibernate: %v, want ErrUnsupported", err)
	}
	t.Logf("refused: %v", err)
	h, _ := cgroup.Detect()
	g, gerr := h.Load("roost/" + sb.Spec.ID)
	if gerr != nil || !g.Frozen() {
		t.Errorf("after the refusal the sandbox is not frozen (cgroup: %v)", gerr)
	}
	if err := d.Resume(ctx, sb.Spec.ID); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(sb.MustExec(t, "pgrep -c -f IPPROTO_MPTCP")); got != "1" {
		t.Errorf("the MPTCP process after the refusal: %q", got)
	}
}

func du(t testing.TB, dir string) string {
	var n int64
	_ = filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return strconv.FormatInt(n>>10, 10) + " KiB"
}

func readLog(stateDir string) string {
	b, _ := os.ReadFile(filepath.Join(stateDir, runtime.LogFile))
	return string(b)
}

// BenchmarkHibernate measures hibernating an idle base sandbox and
// restoring it until envd answers, and reports the p50 of each, with the
// host memory its cgroup holds running and hibernated. Beside them, in
// the same run: pausing it with the freezer alone (which keeps its
// memory), and resuming that.
func BenchmarkHibernate(b *testing.B) {
	d := newDriverB(b)
	needCRIU(b, d)
	net := runtimetest.Network(b)
	sb := runtimetest.Start(b, d, net, runtimetest.Options{})
	ctx := context.Background()
	var hib, res, freeze, thaw []time.Duration
	var running, hibernated uint64
	for b.Loop() {
		t0 := time.Now()
		if err := d.Pause(ctx, sb.Spec.ID); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := d.Resume(ctx, sb.Spec.ID); err != nil {
			b.Fatal(err)
		}
		freeze, thaw = append(freeze, t1.Sub(t0)), append(thaw, time.Since(t1))
		running = max(running, sandboxMemory(b, sb.Spec.ID))
		t0 = time.Now()
		st, err := d.Snapshot(ctx, sb.Spec.ID)
		if err != nil {
			b.Fatal(err)
		}
		t1 = time.Now()
		hibernated = max(hibernated, sandboxMemory(b, sb.Spec.ID))
		inst, err := d.Restore(ctx, sb.Spec, st)
		if err != nil {
			b.Fatal(err)
		}
		if err := runtimetest.WaitHealthy(ctx, "http://"+inst.Envd.String()); err != nil {
			b.Fatal(err)
		}
		hib, res = append(hib, t1.Sub(t0)), append(res, time.Since(t1))
	}
	for name, times := range map[string][]time.Duration{"hibernate": hib, "restore-ready": res, "freeze": freeze, "thaw": thaw} {
		if err := samples.Durations(name, times); err != nil {
			b.Error(err)
		}
		slices.Sort(times)
		b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, name+"-p50-ms")
		b.ReportMetric(float64(times[min(len(times)-1, len(times)*99/100)].Microseconds())/1000, name+"-p99-ms")
	}
	b.ReportMetric(float64(running)/(1<<20), "running-MiB")
	b.ReportMetric(float64(hibernated)/(1<<20), "hibernated-MiB")
}

// criuLog is the end of CRIU's log of a failed hibernation, for a test's
// failure message.
func criuLog(stateDir string) string {
	b, _ := os.ReadFile(filepath.Join(stateDir, "criu-dump.log"))
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		if strings.Contains(l, "Error (") {
			return strings.Join(lines[max(0, i-15):min(len(lines), i+3)], "\n")
		}
	}
	return ""
}

// holdMPTCP starts a process in sb that listens on an MPTCP socket, which
// CRIU cannot dump.
func holdMPTCP(t *testing.T, sb *runtimetest.Sandbox) {
	t.Helper()
	sb.MustExec(t, `nohup python3 -c '
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)  # IPPROTO_MPTCP
s.bind(("0.0.0.0", 8081))
s.listen()
open("/tmp/mptcp", "w").write("ready")
time.sleep(1000)' >/dev/null 2>&1 &
for i in $(seq 50); do test -s /tmp/mptcp && break; sleep 0.1; done; cat /tmp/mptcp`)
}

// TestHibernateWhileSpawning hibernates and restores, round after round, a
// sandbox whose shells start commands without pause (each with a vfork):
// the hibernation must not catch one mid-vfork, where CRIU hangs for its
// timeout and fails (vfork_linux.go).
func TestHibernateWhileSpawning(t *testing.T) {
	d := newDriver(t)
	needCRIU(t, d)
	net := runtimetest.Network(t)
	sb := runtimetest.Start(t, d, net, runtimetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sb.MustExec(t, `for i in 1 2; do nohup dash -c 'while :; do /bin/true; done' >/dev/null 2>&1 & echo $! >> /tmp/spawners; done`)
	for round := range 3 {
		started := time.Now()
		st, err := d.Snapshot(ctx, sb.Spec.ID)
		if err != nil {
			t.Fatalf("round %d: hibernate: %v\n%s", round, err, criuLog(sb.Spec.StateDir))
		}
		t.Logf("round %d: hibernated in %v", round, time.Since(started).Round(time.Millisecond))
		if err := sb.WaitGone(ctx); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		inst, err := d.Restore(ctx, sb.Spec, st)
		if err != nil {
			t.Fatalf("round %d: restore: %v", round, err)
		}
		sb.Instance, sb.Envd = inst, "http://"+inst.Envd.String()
		if err := runtimetest.WaitHealthy(ctx, sb.Envd); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if got := sb.MustExec(t, `for p in $(cat /tmp/spawners); do kill -0 $p 2>/dev/null || echo "$p gone"; done`); got != "" {
			t.Fatalf("round %d: the spawning shells after the restore: %s", round, got)
		}
	}
}
