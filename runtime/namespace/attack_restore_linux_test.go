package namespace_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/runtime/namespace"
	"roost.dev/roost/runtime/runtimetest"
)

// Unmount a masked path of /proc or /sys, mount a procfs or sysfs of its
// own, read /proc/kcore, keys and timer_list, write sysrq, or unmount /dev
// to reach device nodes, in a sandbox that was hibernated and restored
// (CRIU rebuilds its mount namespace; the driver mounts /proc and /sys
// again from the host's, so the masks are locked as a new sandbox's are),
// with its capabilities bounded and with all of them in its user
// namespace.
func TestAttackUnmountMaskedPathAfterRestore(t *testing.T) {
	bothConfinements(t, func(t *testing.T, d *namespace.Driver) {
		sb := startRestored(t, d)
		unmountMaskedPathIn(t, sb)
		readMaskedIn(t, sb)
		writeSysrqIn(t, sb)
		unmountDevIn(t, sb)
	})
}

// startRestored starts a sandbox on d, hibernates and restores it, and
// returns it once envd answers again.
func startRestored(t *testing.T, d *namespace.Driver) *runtimetest.Sandbox {
	t.Helper()
	needCRIU(t, d)
	sb := runtimetest.Start(t, d, runtimetest.Network(t), runtimetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
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
		t.Fatalf("%v (log: %s)", err, readLog(sb.Spec.StateDir))
	}
	return sb
}

// readMaskedIn: the masked files read nothing.
func readMaskedIn(t *testing.T, sb *runtimetest.Sandbox) {
	t.Helper()
	for _, p := range []string{"/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/sys/firmware"} {
		out := sb.MustExec(t, fmt.Sprintf("(cat %[1]s 2>/dev/null || ls -A %[1]s 2>/dev/null) | head -c 4096 | wc -c", p))
		if n := strings.TrimSpace(out); n != "0" {
			t.Errorf("%s gives %s bytes", p, n)
		}
	}
}

// writeSysrqIn: /proc/sysrq-trigger and /proc/sys stay read-only.
func writeSysrqIn(t *testing.T, sb *runtimetest.Sandbox) {
	t.Helper()
	if r, _ := sb.Exec(context.Background(), "echo h > /proc/sysrq-trigger"); r.ExitCode == 0 {
		t.Error("the sandbox wrote /proc/sysrq-trigger")
	}
	if r, _ := sb.Exec(context.Background(), "echo 1 > /proc/sys/kernel/sysrq"); r.ExitCode == 0 {
		t.Error("the sandbox wrote /proc/sys/kernel/sysrq")
	}
}
