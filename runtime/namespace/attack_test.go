package namespace_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"roost.dev/roost/runtime/namespace"
	"roost.dev/roost/runtime/namespace/namespacetest"
	"roost.dev/roost/runtime/runtimetest"
	"roost.dev/roost/template/templatetest"
)

// Attacks on what a namespace sandbox can see of the host and of other
// sandboxes (issue 12, points 1, 4 and 9). Each runs in a real sandbox,
// asserts the attack fails, and that the sandbox still serves legitimate
// use afterwards (stillWorks).

// stillWorks fails t unless sb runs a command, writes a file, and its
// default user gets root through sudo.
func stillWorks(t *testing.T, sb *runtimetest.Sandbox) {
	t.Helper()
	if got := strings.TrimSpace(sb.MustExec(t, "echo ok > /tmp/legit && cat /tmp/legit")); got != "ok" {
		t.Errorf("after the attack, a file written reads %q", got)
	}
	if got := strings.TrimSpace(sb.MustExec(t, "runuser -u user -- sudo -n id -u")); got != "0" {
		t.Errorf("after the attack, sudo as user gives uid %q, want 0", got)
	}
}

// bothConfinements runs f against a driver as configured, and against one
// that leaves sandboxes their full capabilities in their user namespace:
// the mount boundary must hold by itself (the kernel's mount locks, nodev),
// not only because the capability bound forbids unmounting.
func bothConfinements(t *testing.T, f func(t *testing.T, d *namespace.Driver)) {
	t.Run("confined", func(t *testing.T) { f(t, newDriver(t)) })
	t.Run("unconfined", func(t *testing.T) {
		d, err := namespace.New(namespace.Config{
			DataDir: filepath.Join(templatetest.CacheDir(), "runtime", "namespace"),
			Init:    namespacetest.Init(t), Unconfined: true,
		}, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
		if err != nil {
			t.Fatal(err)
		}
		f(t, d)
	})
}

// inPrivateMounts runs script in a mount namespace of its own when the
// sandbox may make one (so an attack that got through would not break the
// sandbox for the checks after it), else in the sandbox's own.
func inPrivateMounts(script string) string {
	q := "'" + strings.ReplaceAll(script, "'", `'\''`) + "'"
	return "if unshare -m true 2>/dev/null; then unshare -m sh -c " + q + "; else sh -c " + q + "; fi"
}

// Another sandbox's ID (the credential for its public ports) is named
// nowhere in /sys, /proc, /run or the mount table of a sandbox.
func TestAttackFindOtherSandboxID(t *testing.T) {
	d := newDriver(t)
	nw := runtimetest.Network(t)
	sb := runtimetest.Start(t, d, nw, runtimetest.Options{})
	other := runtimetest.Start(t, d, nw, runtimetest.Options{})
	id, dir := other.Spec.ID, filepath.Dir(other.Spec.StateDir)
	// Names anywhere below /sys, /run and /proc's non-process entries;
	// contents of the files that list cgroups, interfaces, block devices
	// and mounts.
	script := fmt.Sprintf(`
find /sys /run /proc -path '/proc/[0-9]*' -prune -o -path /proc/self -prune -o -path /proc/thread-self -prune -o -name '*%[1]s*' -print 2>/dev/null
grep -rsl --binary-files=text -e '%[1]s' -e '%[2]s' /sys/fs/cgroup /sys/class /sys/block /sys/devices/virtual /sys/kernel/mm /run 2>/dev/null
grep -sl --binary-files=text -e '%[1]s' -e '%[2]s' /proc/self/mountinfo /proc/self/mounts /proc/self/cgroup /proc/1/mountinfo /proc/partitions /proc/swaps /proc/locks /proc/cgroups /proc/timer_list /proc/sched_debug /proc/net/* 2>/dev/null
true`, id, dir)
	if out := strings.TrimSpace(sb.MustExec(t, script)); out != "" {
		t.Errorf("sandbox %s finds sandbox %s named in:\n%s", sb.Spec.ID, id, out)
	}
	if out := sb.MustExec(t, "ls -A /sys/fs/cgroup; find /sys/fs/cgroup -maxdepth 3 -name 'roost*'"); strings.Contains(out, "roost") {
		t.Errorf("/sys/fs/cgroup lists roost groups:\n%s", out)
	}
	// Its own mounts name no host path either.
	if out := sb.MustExec(t, "cat /proc/self/mountinfo"); strings.Contains(out, filepath.Dir(sb.Spec.StateDir)) || strings.Contains(out, "/var/") || strings.Contains(out, "/tmp/") {
		t.Errorf("mountinfo names host paths:\n%s", out)
	}
	stillWorks(t, sb)
}

// /sys/class/net lists the host's interfaces (and every sandbox's veth).
func TestAttackListHostInterfaces(t *testing.T) {
	d := newDriver(t)
	sb := runtimetest.Start(t, d, runtimetest.Network(t), runtimetest.Options{})
	got := strings.Fields(sb.MustExec(t, "ls /sys/class/net /sys/devices/virtual/net"))
	got = slices.DeleteFunc(got, func(s string) bool { return strings.HasSuffix(s, ":") })
	slices.Sort(got)
	want := []string{sb.Spec.Network.Interface, "lo", "lo"}
	slices.Sort(want)
	if !slices.Equal(slices.Compact(got), slices.Compact(want)) {
		t.Errorf("interfaces in /sys: %v, want %v", got, slices.Compact(want))
	}
	stillWorks(t, sb)
}

// Unmount /dev to reach the template's device nodes (its /dev/console,
// c 5,1) under it, or make a device node of one's own.
func TestAttackUnmountDevForTemplateDevices(t *testing.T) {
	bothConfinements(t, unmountDevForTemplateDevices)
}

func unmountDevForTemplateDevices(t *testing.T, d *namespace.Driver) {
	unmountDevIn(t, runtimetest.Start(t, d, runtimetest.Network(t), runtimetest.Options{}))
}

func unmountDevIn(t *testing.T, sb *runtimetest.Sandbox) {
	t.Helper()
	out := sb.MustExec(t, inPrivateMounts(`
umount -l /dev 2>/dev/null && echo unmounted
for f in /dev/console /dev/tty1 /dev/mem /dev/kmsg /dev/sda /dev/vda; do
	[ -c "$f" ] || [ -b "$f" ] || continue
	if head -c 1 "$f" </dev/null >/dev/null 2>&1 || true >"$f" 2>/dev/null; then echo "opened $f"; fi
done
mknod /tmp/mem c 1 1 2>/dev/null && head -c 1 /tmp/mem >/dev/null 2>&1 && echo "opened own mem"
mknod /dev/shm/null2 c 1 3 2>/dev/null && true >/dev/shm/null2 2>/dev/null && echo "opened own null"
true`))
	if strings.Contains(out, "opened") {
		t.Errorf("the sandbox opened a device it was not given:\n%s", out)
	}
	// The root is nodev however /dev is mounted.
	if root := sb.MustExec(t, "awk '$5 == \"/\" {print $6}' /proc/self/mountinfo"); !strings.Contains(root, "nodev") {
		t.Errorf("the sandbox's root is mounted %q, want nodev", root)
	}
	sb.MustExec(t, "test -c /dev/null && echo x > /dev/null && head -c 4 /dev/urandom | wc -c")
	stillWorks(t, sb)
}

// Unmount a masked path to read what it hides, or mount an unmasked
// procfs or sysfs elsewhere.
func TestAttackUnmountMaskedPath(t *testing.T) {
	bothConfinements(t, unmountMaskedPath)
}

func unmountMaskedPath(t *testing.T, d *namespace.Driver) {
	unmountMaskedPathIn(t, runtimetest.Start(t, d, runtimetest.Network(t), runtimetest.Options{}))
}

func unmountMaskedPathIn(t *testing.T, sb *runtimetest.Sandbox) {
	t.Helper()
	out := sb.MustExec(t, inPrivateMounts(`
for p in /proc/kcore /proc/keys /proc/timer_list /proc/sys /proc/sysrq-trigger /sys/firmware /sys/devices/virtual/block /sys; do
	umount "$p" 2>/dev/null && echo "unmounted $p"
	umount -l "$p" 2>/dev/null && echo "detached $p"
done
mkdir -p /tmp/p /tmp/s
mount -t proc proc /tmp/p 2>/dev/null && echo "mounted proc"
mount -t sysfs sysfs /tmp/s 2>/dev/null && echo "mounted sysfs"
mount -o remount,rw /proc/sys 2>/dev/null && echo "remounted /proc/sys"
mount -o remount,rw /sys 2>/dev/null && echo "remounted /sys"
true`))
	if strings.TrimSpace(out) != "" {
		t.Errorf("masks came off:\n%s", out)
	}
	if n := strings.TrimSpace(sb.MustExec(t, "cat /proc/kcore /proc/keys /proc/timer_list 2>/dev/null | wc -c")); n != "0" {
		t.Errorf("masked files read %s bytes", n)
	}
	stillWorks(t, sb)
}

// Read the host's kernel memory and keys through /proc.
func TestAttackReadKcoreAndKeys(t *testing.T) {
	d := newDriver(t)
	sb := runtimetest.Start(t, d, runtimetest.Network(t), runtimetest.Options{})
	for _, p := range []string{"/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/sys/firmware"} {
		out := sb.MustExec(t, fmt.Sprintf("(cat %[1]s 2>/dev/null || ls -A %[1]s 2>/dev/null) | head -c 4096 | wc -c", p))
		if n := strings.TrimSpace(out); n != "0" {
			t.Errorf("%s gives %s bytes", p, n)
		}
	}
	stillWorks(t, sb)
}

// Write /proc/sysrq-trigger to act on the host's kernel ('h' only prints
// help, should the attack get through).
func TestAttackWriteSysrqTrigger(t *testing.T) {
	d := newDriver(t)
	sb := runtimetest.Start(t, d, runtimetest.Network(t), runtimetest.Options{})
	if r, _ := sb.Exec(context.Background(), "echo h > /proc/sysrq-trigger"); r.ExitCode == 0 {
		t.Error("the sandbox wrote /proc/sysrq-trigger")
	}
	if r, _ := sb.Exec(context.Background(), "echo 1 > /proc/sys/kernel/sysrq"); r.ExitCode == 0 {
		t.Error("the sandbox wrote /proc/sys/kernel/sysrq")
	}
	stillWorks(t, sb)
}

// An unprivileged host user lists or reads a sandbox's root, upper layer
// or state directory.
func TestAttackHostUserEntersSandbox(t *testing.T) {
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv not found")
	}
	d := newDriver(t)
	sb := runtimetest.Start(t, d, runtimetest.Network(t), runtimetest.Options{})
	sb.MustExec(t, "echo secret > /root/secret; chmod 644 /root/secret; echo secret > /tmp/secret; chmod 644 /tmp/secret")
	dir := sb.Spec.StateDir
	for _, p := range []string{dir, dir + "/rootfs", dir + "/rootfs/tmp", dir + "/disk", dir + "/disk/upper", dir + "/disk/upper/tmp"} {
		if out, err := asNobody("ls", "-A", p); err == nil {
			t.Errorf("nobody listed %s: %s", p, out)
		}
	}
	for _, p := range []string{dir + "/rootfs/tmp/secret", dir + "/disk/upper/tmp/secret", dir + "/rootfs/root/secret", dir + "/" + "init.log", dir + "/disk.img"} {
		if out, err := asNobody("head", "-c", "64", p); err == nil {
			t.Errorf("nobody read %s: %q", p, out)
		}
	}
	stillWorks(t, sb)
}

func asNobody(args ...string) (string, error) {
	args = append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "--"}, args...)
	out, err := exec.Command("setpriv", args...).CombinedOutput()
	return string(out), err
}

// Two sandboxes share one host uid, so root of one that escaped its mount
// namespace owns the other's files and may signal its processes.
func TestAttackSharedHostUID(t *testing.T) {
	d := newDriver(t)
	nw := runtimetest.Network(t)
	a := runtimetest.Start(t, d, nw, runtimetest.Options{})
	b := runtimetest.Start(t, d, nw, runtimetest.Options{})
	ua, ub := hostUID(t, a.Instance.Pid), hostUID(t, b.Instance.Pid)
	if ua == ub || ua < namespace.HostIDBase || ub < namespace.HostIDBase || ua == namespace.HostIDBase || ub == namespace.HostIDBase {
		t.Errorf("sandbox roots are host uids %d and %d: want two different ranges above the shared %d", ua, ub, namespace.HostIDBase)
	}
	// Files each writes belong to its own range on the host.
	for _, sb := range []*runtimetest.Sandbox{a, b} {
		sb.MustExec(t, "touch /root/mine")
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(sb.Spec.StateDir, "disk", "upper", "root", "mine"), &st); err != nil {
			t.Fatal(err)
		}
		if want := hostUID(t, sb.Instance.Pid); int(st.Uid) != want {
			t.Errorf("a file sandbox root made is host uid %d, want %d", st.Uid, want)
		}
	}
	// A's root, as a host process, cannot signal B's processes.
	pid := strconv.Itoa(b.Instance.Pid)
	if out, err := exec.Command("setpriv", "--reuid="+strconv.Itoa(ua), "--regid="+strconv.Itoa(ua), "--clear-groups", "--", "kill", "-0", pid).CombinedOutput(); err == nil {
		t.Errorf("sandbox A's host uid signalled sandbox B's init: %s", out)
	}
	stillWorks(t, a)
	stillWorks(t, b)
}

// hostUID is the real uid of pid as the host sees it.
func hostUID(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			f := strings.Fields(rest)
			n, _ := strconv.Atoi(f[0])
			return n
		}
	}
	t.Fatalf("no Uid in /proc/%d/status", pid)
	return 0
}
