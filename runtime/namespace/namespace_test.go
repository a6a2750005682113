package namespace_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/cgroup"
	"roost.dev/roost/errdefs"
	"roost.dev/roost/mountinfo"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/namespace"
	"roost.dev/roost/runtime/namespace/namespacetest"
	"roost.dev/roost/runtime/runtimetest"
)

func newDriver(t *testing.T) *namespace.Driver { return newDriverB(t) }

func newDriverB(t testing.TB) *namespace.Driver { return namespacetest.Driver(t) }

func TestConformance(t *testing.T) {
	runtimetest.Run(t, func(t testing.TB) runtime.Runtime { return newDriverB(t) }, runtimetest.Network(t))
}

func TestIsolation(t *testing.T) {
	d := newDriver(t)
	nw := runtimetest.Network(t)
	sb := runtimetest.Start(t, d, nw, runtimetest.Options{})

	t.Run("host processes invisible", func(t *testing.T) {
		out := sb.MustExec(t, "ls /proc | grep -c '^[0-9]'")
		if n, _ := strconv.Atoi(strings.TrimSpace(out)); n == 0 || n > 10 {
			t.Errorf("sandbox sees %d processes", n)
		}
		if out := sb.MustExec(t, "cat /proc/1/cmdline | tr '\\0' ' '"); !strings.HasPrefix(out, "roost-init") {
			t.Errorf("pid 1 is %q, want the sandbox init", out)
		}
	})
	t.Run("root is not host root", func(t *testing.T) {
		out := strings.Fields(sb.MustExec(t, "cat /proc/self/uid_map"))
		if len(out) != 3 || out[0] != "0" || out[2] != strconv.Itoa(namespace.IDRange) {
			t.Fatalf("uid_map %v", out)
		}
		// A range of its own, not the one all sandboxes once shared.
		if base, _ := strconv.Atoi(out[1]); base <= namespace.HostIDBase || (base-namespace.HostIDBase)%namespace.IDRange != 0 {
			t.Errorf("uid_map %v: root is host uid %d", out, base)
		}
		// Files created inside belong to the mapped range on the host.
		sb.MustExec(t, "touch /root/owned")
		if r, _ := sb.Exec(context.Background(), "echo x > /proc/sys/kernel/hostname"); r.ExitCode == 0 {
			t.Error("sandbox root changed a host sysctl")
		}
	})
	t.Run("template files belong to sandbox root", func(t *testing.T) {
		if got := strings.TrimSpace(sb.MustExec(t, "stat -c %u:%g /etc/passwd /usr/bin/sudo | sort -u")); got != "0:0" {
			t.Errorf("owners %q", got)
		}
		sb.MustExec(t, "echo 'roost' >> /etc/motd && useradd -m probeuser && id probeuser")
	})
	t.Run("minimal dev", func(t *testing.T) {
		sb.MustExec(t, "test -c /dev/null && test -c /dev/urandom && test -c /dev/zero && test -c /dev/full && test -e /dev/ptmx && test -d /dev/shm && head -c 8 /dev/urandom | wc -c")
		sb.MustExec(t, "script -qc 'tty' /dev/null | grep -q /dev/pts/")
	})
	t.Run("host services unreachable", func(t *testing.T) {
		port := runtimetest.HostListener(t)
		if gw := sb.Spec.Network.Gateway.String(); sb.Reaches(context.Background(), gw, port) {
			t.Errorf("sandbox reached a host listener at %s:%d", gw, port)
		}
	})
	t.Run("own cgroups only, read-only", func(t *testing.T) {
		// The host's /sys/fs/cgroup lists every group on the host (other
		// sandboxes' among them); the sandbox sees its own groups as roots.
		if out := sb.MustExec(t, "find /sys/fs/cgroup -name 'roost*' | head -3"); strings.TrimSpace(out) != "" {
			t.Errorf("sandbox sees roost groups in its cgroupfs: %q", out)
		}
		// envd and what it runs are in the sandbox's cgroup namespace.
		if out := sb.MustExec(t, "cut -d: -f3 /proc/self/cgroup | sort -u"); strings.TrimSpace(out) != "/" {
			t.Errorf("a command's cgroups are %q, want / in the sandbox's cgroup namespace", out)
		}
		if got := strings.TrimSpace(sb.MustExec(t, "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max")); got == "" {
			t.Error("the sandbox's own pids group is not readable")
		}
		if r, _ := sb.Exec(context.Background(), "mkdir /sys/fs/cgroup/memory/escape || mkdir /sys/fs/cgroup/escape"); r.ExitCode == 0 {
			t.Error("sandbox made a cgroup")
		}
	})
	t.Run("other sandboxes invisible", func(t *testing.T) {
		other := runtimetest.Start(t, d, nw, runtimetest.Options{})
		other.MustExec(t, "echo secret > /tmp/other-secret")
		if r, _ := sb.Exec(context.Background(), "test -e /tmp/other-secret"); r.ExitCode == 0 {
			t.Error("a sandbox sees another's files")
		}
		if sb.Reaches(context.Background(), other.Instance.Envd.Addr().String(), int(other.Instance.Envd.Port())) {
			t.Error("a sandbox reached another sandbox's envd")
		}
	})
}

func TestLimits(t *testing.T) {
	d := newDriver(t)
	net := runtimetest.Network(t)
	sb := runtimetest.Start(t, d, net, runtimetest.Options{Limits: runtime.Limits{MemoryMB: 128, Pids: 64, DiskMB: 300}})
	ctx := context.Background()

	t.Run("memory hog is OOM-killed inside", func(t *testing.T) {
		r, err := sb.Exec(ctx, "python3 -c 'b = bytearray(512 << 20); print(len(b))'")
		if err != nil {
			t.Fatal(err)
		}
		if r.ExitCode == 0 {
			t.Fatalf("512 MiB allocation in a 128 MiB sandbox succeeded: %q", r.Stdout)
		}
		sb.MustExec(t, "true") // envd survived
	})
	t.Run("envd reports the sandbox's memory, not the host's", func(t *testing.T) {
		resp, err := http.Get("http://" + sb.Instance.Envd.String() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m struct {
			MemTotal uint64 `json:"mem_total"`
			MemUsed  uint64 `json:"mem_used"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
			t.Fatal(err)
		}
		if m.MemTotal != 128<<20 || m.MemUsed == 0 || m.MemUsed > m.MemTotal {
			t.Errorf("envd /metrics memory %d of %d bytes, want of the 128 MiB limit", m.MemUsed, m.MemTotal)
		}
	})
	t.Run("fork bomb hits pids.max", func(t *testing.T) {
		r, err := sb.Exec(ctx, "for i in $(seq 200); do sleep 5 & done 2>&1; wait")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(r.Stdout+r.Stderr, "Resource temporarily unavailable") {
			t.Errorf("200 processes under pids.max=64 did not fail: %q %q", r.Stdout, r.Stderr)
		}
		sb.MustExec(t, "pkill sleep || true")
	})
	t.Run("disk fills with ENOSPC", func(t *testing.T) {
		r, err := sb.Exec(ctx, "dd if=/dev/zero of=/tmp/fill bs=1M count=400 2>&1; rm -f /tmp/fill")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(r.Stdout, "No space left on device") {
			t.Errorf("writing 400 MiB into a 300 MiB disk: %q", r.Stdout)
		}
	})
}

func TestRecover(t *testing.T) {
	d := newDriver(t)
	net := runtimetest.Network(t)
	sb := runtimetest.Start(t, d, net, runtimetest.Options{})
	sb.MustExec(t, "echo kept > /root/state; nohup sleep 1000 >/dev/null 2>&1 &")

	// A second driver stands for an agent of the version before, which
	// kept no driver state: the driver reads the namespace.json it wrote
	// itself then.
	runtimetest.WriteLegacyState(t, sb.Spec.StateDir, "namespace.json", sb.Instance.State)
	again := newDriver(t)
	for range 2 {
		inst, err := again.Recover(context.Background(), sb.Spec, runtime.DriverState{})
		if err != nil {
			t.Fatal(err)
		}
		if inst.Pid != sb.Instance.Pid || inst.Envd != sb.Instance.Envd || !bytes.Equal(inst.State.Data, sb.Instance.State.Data) {
			t.Errorf("recovered %+v, had %+v", inst, sb.Instance)
		}
	}
	// The start-up sweep keeps what was re-adopted, and removes leftovers.
	h, err := cgroup.Detect()
	if err != nil {
		t.Fatal(err)
	}
	stray := "roost/" + runtimetest.ID()
	if _, err := h.Create(stray, cgroup.Limits{}); err != nil {
		t.Fatal(err)
	}
	if err := again.Prune(context.Background(), []string{sb.Spec.ID}); err != nil {
		t.Fatalf("prune: %v", err)
	}
	if _, err := h.Load(stray); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("stray cgroup %s survived prune: %v", stray, err)
	}
	if got := strings.TrimSpace(sb.MustExec(t, "cat /root/state; pgrep -c sleep")); got != "kept\n1" {
		t.Errorf("state after recovery: %q", got)
	}
	if err := again.Destroy(context.Background(), sb.Spec.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(sb.Spec.StateDir, "namespace.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("destroy left the legacy state file: %v", err)
	}
	// Recovering a sandbox that is gone cleans up and says not found.
	for _, st := range []runtime.DriverState{sb.Instance.State, {}} {
		if _, err := newDriver(t).Recover(context.Background(), sb.Spec, st); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("recover a destroyed sandbox: %v, want ErrNotFound", err)
		}
	}
}

// Prune run while sandboxes are being created leaves them be: an ID a
// Create has reserved counts as known, the template mount it uses stays,
// and the driver's table is read under its lock (go test -race).
func TestPruneDuringCreate(t *testing.T) {
	d := newDriver(t)
	nw := runtimetest.Network(t)
	stop, done := make(chan struct{}), make(chan error, 1)
	go func() {
		var err error
		for err == nil {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			err = d.Prune(context.Background(), nil)
		}
		done <- err
	}()
	var sbs []*runtimetest.Sandbox
	for range 4 {
		sbs = append(sbs, runtimetest.Start(t, d, nw, runtimetest.Options{}))
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatalf("prune: %v", err)
	}
	for _, sb := range sbs {
		sb.MustExec(t, "test -x /bin/bash")
	}
}

// The init restarts envd when it dies, on the listening socket it keeps.
func TestEnvdRestart(t *testing.T) {
	d := newDriver(t)
	sb := runtimetest.Start(t, d, runtimetest.Network(t), runtimetest.Options{})
	before := strings.TrimSpace(sb.MustExec(t, "pgrep -x envd"))
	_, _ = sb.Exec(context.Background(), "kill -9 "+before) // the answer dies with envd
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := runtimetest.WaitHealthy(ctx, sb.Envd); err != nil {
		t.Fatal(err)
	}
	if after := strings.TrimSpace(sb.MustExec(t, "pgrep -x envd")); after == before || after == "" {
		t.Errorf("envd pid %q after restart, %q before", after, before)
	}
}

// A running sandbox keeps only its disk and root mounted in the host's
// namespace: the host's copies of its /proc and /sys (a dozen mounts with
// the masks) go once the sandbox holds its own, since every later create
// copies and walks all the host's mounts.
func TestHostMountsPerSandbox(t *testing.T) {
	d := newDriver(t)
	sb := runtimetest.Start(t, d, runtimetest.Network(t), runtimetest.Options{})
	ms, err := mountinfo.Read()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range ms {
		if rel, ok := strings.CutPrefix(m.Target, sb.Spec.StateDir+"/"); ok {
			got = append(got, rel)
		}
	}
	slices.Sort(got)
	if want := []string{"disk", "rootfs"}; !slices.Equal(got, want) {
		t.Errorf("host mounts in the sandbox's state dir: %v, want %v", got, want)
	}
	// The sandbox's own copies stay, masks included.
	if out := sb.MustExec(t, "awk '$5 == \"/proc/keys\" || $5 == \"/sys/firmware\"' /proc/self/mountinfo | wc -l"); strings.TrimSpace(out) != "2" {
		t.Errorf("masks in the sandbox: %q mounts, want 2", out)
	}
}
