package namespace_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"roost.dev/roost/cgroup"
	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/namespace"
	"roost.dev/roost/runtime/runtimetest"
)

// uuidPattern is how the kernel writes a boot id.
var uuidPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// bootID is the boot id sandbox sb reads.
func bootID(t testing.TB, sb *runtimetest.Sandbox) string {
	t.Helper()
	id := strings.TrimSpace(sb.MustExec(t, "cat /proc/sys/kernel/random/boot_id"))
	if !uuidPattern.MatchString(id) {
		t.Fatalf("boot id %q is not a UUID", id)
	}
	return id
}

// TestHalt halts a running sandbox (its processes end, its memory,
// cgroup and mounts go, its disk stays), re-adopts it in a new driver (an
// agent restart), boots it there on a new network namespace (a new boot
// id, its files, none of its processes), and destroys it halted.
func TestHalt(t *testing.T) {
	d := newDriver(t)
	net := runtimetest.Network(t)
	sb := runtimetest.Start(t, d, net, runtimetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	hostBoot, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	before := bootID(t, sb)
	if before == strings.TrimSpace(string(hostBoot)) {
		t.Errorf("the sandbox reads the host's boot id")
	}
	sb.MustExec(t, "echo kept > /root/kept; nohup sleep 1000 >/dev/null 2>&1 &")
	if sandboxMemory(t, sb.Spec.ID) == 0 {
		t.Fatal("a running sandbox charges no memory")
	}

	st, err := d.Halt(ctx, sb.Spec.ID)
	if err != nil {
		t.Fatalf("halt: %v", err)
	}
	if err := sb.WaitGone(ctx); err != nil {
		t.Fatal(err)
	}
	checkHalted(t, sb)
	if _, err := d.Halt(ctx, sb.Spec.ID); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("halt twice: %v, want ErrConflict", err)
	}
	for name, op := range map[string]func() error{
		"stats":     func() error { _, err := d.Stats(ctx, sb.Spec.ID); return err },
		"pause":     func() error { return d.Pause(ctx, sb.Spec.ID) },
		"hibernate": func() error { _, err := d.Snapshot(ctx, sb.Spec.ID); return err },
	} {
		if err := op(); !errors.Is(err, errdefs.ErrConflict) {
			t.Errorf("%s of a halted sandbox: %v, want ErrConflict", name, err)
		}
	}

	// An agent restart: a new driver re-adopts it (twice, as Recover may
	// be called), keeps it through Prune, and boots it on a new network.
	d2 := newDriver(t)
	for range 2 {
		if _, err := d2.Recover(ctx, sb.Spec, st); err != nil {
			t.Fatalf("recover a halted sandbox: %v", err)
		}
	}
	if err := d2.Prune(ctx, []string{sb.Spec.ID}); err != nil {
		t.Fatal(err)
	}
	if err := net.Teardown(ctx, sb.Spec.ID, sb.Slot); err != nil {
		t.Fatal(err)
	}
	nw, err := net.Setup(ctx, sb.Spec.ID, sb.Slot, false)
	if err != nil {
		t.Fatal(err)
	}
	sb.Spec.Network = nw
	// Boot mounts the spec's volumes, as Create does.
	vol := t.TempDir()
	if err := os.WriteFile(filepath.Join(vol, "on-volume"), []byte("volume\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sb.Spec.Volumes = []runtime.VolumeMount{{ID: "v", Dir: vol, Path: "/mnt/vol"}}
	inst, err := d2.Boot(ctx, sb.Spec, st)
	if err != nil {
		t.Fatalf("boot: %v (log: %s)", err, readLog(sb.Spec.StateDir))
	}
	sb.Instance, sb.Envd = inst, "http://"+inst.Envd.String()
	if err := runtimetest.WaitHealthy(ctx, sb.Envd); err != nil {
		t.Fatalf("%v (log: %s)", err, readLog(sb.Spec.StateDir))
	}
	if after := bootID(t, sb); after == before {
		t.Errorf("boot id %s after the boot, as before it", after)
	}
	if got := sb.MustExec(t, "cat /root/kept /mnt/vol/on-volume; pgrep -x sleep || echo no-sleep"); got != "kept\nvolume\nno-sleep\n" {
		t.Errorf("after the boot: %q, want the file, the volume's and no process of before", got)
	}
	if _, err := d2.Boot(ctx, sb.Spec, inst.State); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("boot of a running sandbox: %v, want ErrConflict", err)
	}

	// Halted when paused, then destroyed while halted, it leaves nothing.
	if err := d2.Pause(ctx, sb.Spec.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := d2.Halt(ctx, sb.Spec.ID); err != nil {
		t.Fatalf("halt a paused sandbox: %v", err)
	}
	checkHalted(t, sb)
	if err := d2.Destroy(ctx, sb.Spec.ID); err != nil {
		t.Fatalf("destroy a halted sandbox: %v", err)
	}
	if _, err := os.Stat(filepath.Join(sb.Spec.StateDir, "disk.img")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("disk image after destroy: %v", err)
	}
	if err := d2.Destroy(ctx, sb.Spec.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("destroy twice: %v, want ErrNotFound", err)
	}
}

// checkHalted checks that nothing of sb runs or is mounted, and that its
// disk image stays.
func checkHalted(t *testing.T, sb *runtimetest.Sandbox) {
	t.Helper()
	if err := syscall.Kill(sb.Instance.Pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("the halted sandbox's init: kill 0: %v, want ESRCH", err)
	}
	h, err := cgroup.Detect()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Load("roost/" + sb.Spec.ID); err == nil {
		t.Errorf("the halted sandbox's cgroup is left")
	}
	if m := sandboxMemory(t, sb.Spec.ID); m != 0 {
		t.Errorf("the halted sandbox holds %d bytes", m)
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, sb.Spec.StateDir) {
			t.Errorf("the halted sandbox's mount is left: %s", line)
		}
	}
	if _, err := os.Stat(filepath.Join(sb.Spec.StateDir, "disk.img")); err != nil {
		t.Errorf("the halted sandbox's disk image: %v", err)
	}
}

// TestBootIDFixed: a sandbox's boot id is read-only and locked: its root,
// with the capabilities of its user namespace too, can neither write it
// nor unmount it to reach the host's; two sandboxes read different ones.
func TestBootIDFixed(t *testing.T) {
	bothConfinements(t, func(t *testing.T, d *namespace.Driver) {
		net := runtimetest.Network(t)
		sb := runtimetest.Start(t, d, net, runtimetest.Options{})
		other := runtimetest.Start(t, d, net, runtimetest.Options{})
		id := bootID(t, sb)
		if bootID(t, other) == id {
			t.Errorf("two sandboxes read boot id %s", id)
		}
		const f = "/proc/sys/kernel/random/boot_id"
		out := sb.MustExec(t, inPrivateMounts(`
echo 00000000-0000-4000-8000-000000000000 > `+f+` 2>/dev/null && echo "wrote it"
mount -o remount,rw `+f+` 2>/dev/null && echo "remounted it"
umount `+f+` 2>/dev/null && echo "unmounted it"
umount -l `+f+` 2>/dev/null && echo "detached it"
cat `+f))
		if out != id+"\n" {
			t.Errorf("after the attacks: %q, want only boot id %s", out, id)
		}
		if got := bootID(t, sb); got != id {
			t.Errorf("boot id %s, was %s", got, id)
		}
	})
}

// TestHibernateKeepsBootID: a restore goes on with the same boot, so with
// the same boot id, still read-only.
func TestHibernateKeepsBootID(t *testing.T) {
	d := newDriver(t)
	needCRIU(t, d)
	net := runtimetest.Network(t)
	sb := runtimetest.Start(t, d, net, runtimetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	before := bootID(t, sb)
	st, err := d.Snapshot(ctx, sb.Spec.ID)
	if err != nil {
		t.Fatalf("hibernate: %v\n%s", err, criuLog(sb.Spec.StateDir))
	}
	inst, err := d.Restore(ctx, sb.Spec, st)
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	sb.Instance, sb.Envd = inst, "http://"+inst.Envd.String()
	if err := runtimetest.WaitHealthy(ctx, sb.Envd); err != nil {
		t.Fatal(err)
	}
	if after := bootID(t, sb); after != before {
		t.Errorf("boot id %s after the restore, %s before", after, before)
	}
	if r, _ := sb.Exec(ctx, "echo x > /proc/sys/kernel/random/boot_id"); r.ExitCode == 0 {
		t.Error("the restored boot id is writable")
	}
	if _, err := os.Stat(filepath.Join(sb.Spec.StateDir, "bootid")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the boot id's staging is left: %v", err)
	}
}
