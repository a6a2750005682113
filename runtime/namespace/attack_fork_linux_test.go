package namespace_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/runtime/namespace"
	"roost.dev/roost/runtime/runtimetest"
)

// Unmount a masked path of /proc or /sys, mount a procfs or sysfs of its
// own, read /proc/kcore, keys and timer_list, write sysrq, or unmount /dev
// to reach device nodes, in a fork (a CRIU restore into a new sandbox, as
// after a hibernation), with its capabilities bounded and with all of
// them in its user namespace.
func TestAttackUnmountMaskedPathAfterFork(t *testing.T) {
	bothConfinements(t, func(t *testing.T, d *namespace.Driver) {
		_, forks := startForks(t, d, 1)
		unmountMaskedPathIn(t, forks[0])
		readMaskedIn(t, forks[0])
		writeSysrqIn(t, forks[0])
		unmountDevIn(t, forks[0])
	})
}

// From a fork, change the files it shares with its source and its
// sibling (the read-only layer of the captured disk): overwrite and
// remove them, remount the root read-write, look for the layer's mount,
// kill every process it can signal. The source and the sibling still
// read the files as captured and run on, with their capabilities bounded
// and with all of them in the fork's user namespace.
func TestAttackForkChangesSharedLayer(t *testing.T) {
	bothConfinements(t, func(t *testing.T, d *namespace.Driver) {
		src, forks := startForks(t, d, 2)
		attacker, sibling := forks[0], forks[1]
		attacker.MustExec(t, inPrivateMounts(`
echo changed > /root/shared 2>/dev/null
rm -f /root/shared-too 2>/dev/null
chown 4242:4242 /root/owned 2>/dev/null; chmod 4777 /root/owned 2>/dev/null
mount -o remount,rw / 2>/dev/null
for l in $(grep -o 'lowerdir=[^,]*' /proc/self/mountinfo | cut -d= -f2 | tr ':' ' '); do echo changed > "$l/root/shared" 2>/dev/null; done
true`))
		_, _ = attacker.Exec(context.Background(), "kill -9 -1") // envd goes too
		for name, sb := range map[string]*runtimetest.Sandbox{"source": src, "sibling": sibling} {
			got := sb.MustExec(t, "cat /root/shared /root/shared-too; stat -c '%u:%g %a' /root/owned")
			if want := "captured\ncaptured\n0:0 644\n"; got != want {
				t.Errorf("the %s reads %q after the fork's attack, want %q", name, got, want)
			}
			stillWorks(t, sb)
		}
	})
}

// startForks starts a sandbox on d with files in /root, captures it, and
// starts n forks of the capture.
func startForks(t *testing.T, d *namespace.Driver, n int) (*runtimetest.Sandbox, []*runtimetest.Sandbox) {
	t.Helper()
	needCRIU(t, d)
	net := runtimetest.Network(t)
	src := runtimetest.Start(t, d, net, runtimetest.Options{})
	src.MustExec(t, "echo captured > /root/shared; echo captured > /root/shared-too; touch /root/owned; chmod 644 /root/owned")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "capture")
	if err := d.Capture(ctx, src.Spec.ID, dir); err != nil {
		t.Fatalf("capture: %v", err)
	}
	var forks []*runtimetest.Sandbox
	for range n {
		fk := runtimetest.Start(t, d, net, runtimetest.Options{Fork: dir})
		// What envd's /init does for a fork the manager starts: the files
		// that name the host (sudo looks its name up).
		fk.MustExec(t, `sed -i "s/^127.0.1.1.*/127.0.1.1\t$(hostname)/" /etc/hosts`)
		if got := strings.TrimSpace(fk.MustExec(t, "cat /root/shared")); got != "captured" {
			t.Fatalf("the fork reads %q", got)
		}
		forks = append(forks, fk)
	}
	return src, forks
}
