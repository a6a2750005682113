package namespace_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"roost.dev/roost/runtime/namespace"
	"roost.dev/roost/runtime/namespace/namespacetest"
	"roost.dev/roost/runtime/runtimetest"
	"roost.dev/roost/template/templatetest"
)

// The attacks below run in a real namespace sandbox, as its root unless
// they say otherwise, and each checks the sandbox still serves a command
// afterwards. They are the namespace runtime's cases of the attack suite
// for the syscall filter and the capability bounding (package confine).

// dockerCaps is the capability mask of Docker's default set, which a
// confined sandbox is bounded to.
const dockerCaps = "00000000a80425fb"

// newDriverWith is newDriverB with confinement switched off or on.
func newDriverWith(t testing.TB, unconfined bool) *namespace.Driver {
	t.Helper()
	runtimetest.RequireRoot(t)
	if av := namespace.Probe(); !av.Available {
		t.Skipf("namespace runtime unavailable: %s", av.Reason)
	}
	d, err := namespace.New(namespace.Config{
		DataDir:    filepath.Join(templatetest.CacheDir(), "runtime", "namespace"),
		Init:       namespacetest.Init(t),
		Unconfined: unconfined,
	}, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func startConfined(t *testing.T) *runtimetest.Sandbox {
	t.Helper()
	sb := runtimetest.Start(t, newDriverWith(t, false), runtimetest.Network(t), runtimetest.Options{})
	if err := sb.WriteFile(context.Background(), "/usr/local/bin/roost-syscall", []byte(syscallProbe)); err != nil {
		t.Fatal(err)
	}
	sb.MustExec(t, "chmod 755 /usr/local/bin/roost-syscall")
	return sb
}

// syscallProbe makes one raw system call, its arguments numbers or "buf"
// (a zeroed 4 KiB buffer), and prints the errno it failed with, or 0. A
// child that a clone made exits at once.
const syscallProbe = `#!/usr/bin/python3
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
buf = ctypes.create_string_buffer(4096)
def arg(a):
    return ctypes.cast(buf, ctypes.c_void_p) if a == "buf" else ctypes.c_long(int(a, 0))
pid = os.getpid()
r = libc.syscall(ctypes.c_long(int(sys.argv[1])), *[arg(a) for a in sys.argv[2:]])
if os.getpid() != pid:
    os._exit(0)
print(ctypes.get_errno() if r == -1 else 0)
`

// rawSyscall runs the probe as user (root when empty) and returns the errno.
func rawSyscall(t *testing.T, sb *runtimetest.Sandbox, user string, nr uintptr, args ...string) syscall.Errno {
	t.Helper()
	cmd := fmt.Sprintf("roost-syscall %d %s", nr, strings.Join(args, " "))
	if user != "" {
		cmd = "runuser -u " + user + " -- " + cmd
	}
	out := strings.TrimSpace(sb.MustExec(t, cmd))
	n, err := strconv.Atoi(out)
	if err != nil {
		t.Fatalf("%s: %q", cmd, out)
	}
	return syscall.Errno(n)
}

// confinedWorks is the legitimate use every attack case checks afterwards.
func confinedWorks(t *testing.T, sb *runtimetest.Sandbox) {
	t.Helper()
	if got := sb.MustExec(t, "echo fine > /tmp/after && cat /tmp/after && runuser -u user -- id -un"); got != "fine\nuser\n" {
		t.Errorf("sandbox after the attack: %q", got)
	}
}

// mustRefuse runs script and fails the test if it exits 0.
func mustRefuse(t *testing.T, sb *runtimetest.Sandbox, script string) string {
	t.Helper()
	r, err := sb.Exec(context.Background(), script)
	if err != nil {
		t.Fatal(err)
	}
	if r.ExitCode == 0 {
		t.Errorf("%q succeeded: %q", script, r.Stdout)
	}
	return r.Stdout + r.Stderr
}

// Attack: new user + net namespace (unshare -Urn) to get CAP_NET_ADMIN over
// nf_tables or links, the usual container escape path.
func TestAttackUnshareUserNetNamespace(t *testing.T) {
	sb := startConfined(t)
	out := mustRefuse(t, sb, "unshare -Urn ip link add roostx type veth peer name roosty")
	if !strings.Contains(out, "Operation not permitted") {
		t.Errorf("unshare -Urn: %q, want EPERM", out)
	}
	mustRefuse(t, sb, "unshare -U -n true")
	if e := rawSyscall(t, sb, "", unix.SYS_UNSHARE, fmt.Sprint(unix.CLONE_NEWUSER)); e != syscall.EPERM {
		t.Errorf("unshare(CLONE_NEWUSER): %v", e)
	}
	if e := rawSyscall(t, sb, "", unix.SYS_CLONE, fmt.Sprint(unix.CLONE_NEWUSER|unix.CLONE_NEWNET|int(syscall.SIGCHLD)), "0", "0", "0", "0"); e != syscall.EPERM {
		t.Errorf("clone(CLONE_NEWUSER|CLONE_NEWNET): %v", e)
	}
	if e := rawSyscall(t, sb, "", unix.SYS_CLONE3, "buf", "88"); e != syscall.ENOSYS {
		t.Errorf("clone3: %v, want ENOSYS", e)
	}
	confinedWorks(t, sb)
}

// Attack: a new net namespace as sandbox root (unshare -n) and link or
// firewall changes in the sandbox's own network namespace.
func TestAttackUnshareNetNamespace(t *testing.T) {
	sb := startConfined(t)
	mustRefuse(t, sb, "unshare -n ip link add roostx type veth peer name roosty")
	mustRefuse(t, sb, "ip link add roostx type veth peer name roosty")
	mustRefuse(t, sb, "ip link set lo mtu 1280")
	mustRefuse(t, sb, "ip addr add 10.99.0.1/32 dev lo")
	if e := rawSyscall(t, sb, "", unix.SYS_SETNS, "0", fmt.Sprint(unix.CLONE_NEWNET)); e != syscall.EPERM {
		t.Errorf("setns: %v", e)
	}
	confinedWorks(t, sb)
}

// Attack: new mount or pid namespaces (unshare -m, unshare -p), and
// mounting a filesystem (tmpfs, or proc over something).
func TestAttackMountAndPidNamespaces(t *testing.T) {
	sb := startConfined(t)
	mustRefuse(t, sb, "unshare -m true")
	mustRefuse(t, sb, "unshare -p -f true")
	mustRefuse(t, sb, "mkdir -p /mnt/x && mount -t tmpfs none /mnt/x")
	mustRefuse(t, sb, "umount /proc")
	mustRefuse(t, sb, "umount -l /dev")
	if e := rawSyscall(t, sb, "", unix.SYS_FSOPEN, "buf", "0"); e != syscall.EPERM {
		t.Errorf("fsopen: %v", e)
	}
	confinedWorks(t, sb)
}

// Attack: kernel interfaces that have been the way into many kernel
// exploits: keyrings, bpf, perf events, io_uring, userfaultfd,
// open_by_handle_at (the "shocker" escape).
func TestAttackKernelInterfaces(t *testing.T) {
	sb := startConfined(t)
	for _, c := range []struct {
		name string
		nr   uintptr
		args []string
	}{
		{"keyctl", unix.SYS_KEYCTL, []string{"0", "-3", "1"}},
		{"add_key", unix.SYS_ADD_KEY, []string{"buf", "buf", "0", "0", "-3"}},
		{"bpf", unix.SYS_BPF, []string{"0", "buf", "72"}},
		{"perf_event_open", unix.SYS_PERF_EVENT_OPEN, []string{"buf", "0", "-1", "-1", "0"}},
		{"io_uring_setup", unix.SYS_IO_URING_SETUP, []string{"1", "buf"}},
		{"userfaultfd", unix.SYS_USERFAULTFD, []string{"0"}},
		{"open_by_handle_at", unix.SYS_OPEN_BY_HANDLE_AT, []string{"-100", "buf", "0"}},
	} {
		if e := rawSyscall(t, sb, "", c.nr, c.args...); e != syscall.EPERM {
			t.Errorf("%s: %v, want EPERM", c.name, e)
		}
	}
	confinedWorks(t, sb)
}

// Attack: loading a kernel module or a new kernel.
func TestAttackKernelModuleLoad(t *testing.T) {
	sb := startConfined(t)
	if e := rawSyscall(t, sb, "", unix.SYS_INIT_MODULE, "buf", "64", "buf"); e != syscall.EPERM {
		t.Errorf("init_module: %v", e)
	}
	if e := rawSyscall(t, sb, "", unix.SYS_FINIT_MODULE, "0", "buf", "0"); e != syscall.EPERM {
		t.Errorf("finit_module: %v", e)
	}
	if e := rawSyscall(t, sb, "", unix.SYS_KEXEC_LOAD, "0", "0", "0", "0"); e != syscall.EPERM {
		t.Errorf("kexec_load: %v", e)
	}
	confinedWorks(t, sb)
}

// Attack: ptrace of the sandbox's init by the unprivileged user and by
// sandbox root, and the host's magic SysRq through /proc/sysrq-trigger;
// ptrace of one's own processes keeps working, as in Docker.
func TestAttackPtraceInitAndSysrq(t *testing.T) {
	sb := startConfined(t)
	const attach = "16" // PTRACE_ATTACH
	if e := rawSyscall(t, sb, "user", unix.SYS_PTRACE, attach, "1", "0", "0"); e != syscall.EPERM {
		t.Errorf("user's ptrace of PID 1: %v, want EPERM", e)
	}
	// Nor sandbox root, which holds the init's own capabilities: the
	// init is not dumpable (its other threads keep a whole bounding set).
	if e := rawSyscall(t, sb, "", unix.SYS_PTRACE, attach, "1", "0", "0"); e != syscall.EPERM {
		t.Errorf("root's ptrace of PID 1: %v, want EPERM", e)
	}
	mustRefuse(t, sb, "cat /proc/1/environ")
	mustRefuse(t, sb, "echo h > /proc/sysrq-trigger")
	mustRefuse(t, sb, "runuser -u user -- cat /proc/1/environ")
	// Legitimate: the user traces its own process.
	out := sb.MustExec(t, fmt.Sprintf(`runuser -u user -- bash -c 'sleep 60 & p=$!; roost-syscall %d %s $p 0 0; kill -9 $p'`, unix.SYS_PTRACE, attach))
	if strings.TrimSpace(out) != "0" {
		t.Errorf("user's ptrace of its own process: errno %s, want success", out)
	}
	confinedWorks(t, sb)
}

// Attack: regaining capabilities: sandbox root, envd, the init and a
// setuid program are all bounded to Docker's set, with nothing
// inheritable or ambient, under the filter (Seccomp: 2).
func TestAttackCapabilitiesBounded(t *testing.T) {
	sb := startConfined(t)
	want := map[string]string{"CapInh": "0000000000000000", "CapPrm": dockerCaps, "CapEff": dockerCaps, "CapBnd": dockerCaps, "CapAmb": "0000000000000000", "Seccomp": "2", "NoNewPrivs": "0"}
	for _, who := range []string{"self", "1", "$(pgrep -x envd)"} {
		got := statusFields(t, sb, who)
		for k, v := range want {
			if got[k] != v {
				t.Errorf("/proc/%s/status %s = %q, want %q", who, k, got[k], v)
			}
		}
	}
	// A root shell that sudo starts for the user has the bounded set.
	out := sb.MustExec(t, "runuser -u user -- sudo grep -E '^Cap(Eff|Bnd)' /proc/self/status")
	if strings.Count(out, dockerCaps) != 2 {
		t.Errorf("sudo's root shell: %q, want %s", out, dockerCaps)
	}
	// capsh cannot add a capability back to the bounding set.
	mustRefuse(t, sb, "capsh --caps=cap_sys_admin+eip -- -c true")
	confinedWorks(t, sb)
}

func statusFields(t *testing.T, sb *runtimetest.Sandbox, pid string) map[string]string {
	t.Helper()
	out := sb.MustExec(t, "grep -E '^(Cap|Seccomp:|NoNewPrivs)' /proc/"+pid+"/status")
	got := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			got[k] = strings.TrimSpace(v)
		}
	}
	return got
}

// Attack: setting the host's clock, rebooting it, or reading its kernel
// log.
func TestAttackClockRebootSyslog(t *testing.T) {
	sb := startConfined(t)
	mustRefuse(t, sb, "date -s '2001-01-01 00:00:00'")
	if e := rawSyscall(t, sb, "", unix.SYS_REBOOT, "0xfee1dead", "672274793", "0x4321fedc"); e != syscall.EPERM {
		t.Errorf("reboot: %v", e) // LINUX_REBOOT_CMD_POWER_OFF with the magics
	}
	if e := rawSyscall(t, sb, "", unix.SYS_SYSLOG, "3", "buf", "4096"); e != syscall.EPERM {
		t.Errorf("syslog: %v", e)
	}
	confinedWorks(t, sb)
}

// sudo and package installs keep working under the filter and the
// bounded capabilities: sudo is a setuid program (no no_new_privs), dpkg
// chowns, chmods and renames as root, and apt-get drops to its _apt user.
// No network: the package is built in the sandbox.
func TestConfinedSudoAndDpkg(t *testing.T) {
	sb := startConfined(t)
	if got := sb.MustExec(t, "runuser -u user -- sudo id -u; runuser -u user -- sudo -u user id -un"); got != "0\nuser\n" {
		t.Errorf("sudo as user: %q", got)
	}
	sb.MustExec(t, `set -e
mkdir -p /tmp/tiny/DEBIAN /tmp/tiny/usr/local/bin
printf 'Package: roost-tiny\nVersion: 1.0\nArchitecture: all\nMaintainer: roost <roost@localhost>\nDescription: a package the confinement test installs\n' > /tmp/tiny/DEBIAN/control
printf '#!/bin/sh\necho tiny\n' > /tmp/tiny/usr/local/bin/roost-tiny
chmod 755 /tmp/tiny/usr/local/bin/roost-tiny
dpkg-deb --build --root-owner-group /tmp/tiny /tmp/tiny.deb`)
	if got := sb.MustExec(t, "dpkg -i /tmp/tiny.deb >/dev/null && roost-tiny && dpkg -r roost-tiny >/dev/null && ! test -e /usr/local/bin/roost-tiny && echo removed"); got != "tiny\nremoved\n" {
		t.Errorf("dpkg -i, -r: %q", got)
	}
	script := "runuser -u user -- sudo DEBIAN_FRONTEND=noninteractive apt-get install -y /tmp/tiny.deb >/tmp/apt.log 2>&1 || { cat /tmp/apt.log; exit 1; }; roost-tiny; " +
		"runuser -u user -- sudo apt-get remove -y roost-tiny >>/tmp/apt.log 2>&1 || { cat /tmp/apt.log; exit 1; }; dpkg -s roost-tiny >/dev/null 2>&1 || echo gone"
	if got := sb.MustExec(t, script); got != "tiny\ngone\n" {
		t.Errorf("apt-get install ./tiny.deb, remove: %q", got)
	}
}

// The control: with confinement off (the benchmarks' baseline), the same
// sandbox lets root make a user namespace and holds every capability,
// which is what the attack cases above would catch coming back. The init
// and root are root as an exec as root leaves it, although the init was
// executed unmapped with ambient capabilities: root's IDs, no groups,
// nothing inheritable or ambient.
func TestUnconfinedControl(t *testing.T) {
	sb := runtimetest.Start(t, newDriverWith(t, true), runtimetest.Network(t), runtimetest.Options{})
	sb.MustExec(t, "unshare -Urn true")
	if got := statusFields(t, sb, "self"); got["CapBnd"] == dockerCaps || got["Seccomp"] != "0" {
		t.Errorf("unconfined sandbox: CapBnd %s, Seccomp %s", got["CapBnd"], got["Seccomp"])
	}
	for _, who := range []string{"self", "1", "$(pgrep -x envd)"} {
		got := statusFields(t, sb, who)
		if got["CapInh"] != "0000000000000000" || got["CapAmb"] != "0000000000000000" || got["CapEff"] != got["CapBnd"] {
			t.Errorf("/proc/%s/status: CapInh %s, CapAmb %s, CapEff %s, CapBnd %s; want none inheritable or ambient, every bounded one effective", who, got["CapInh"], got["CapAmb"], got["CapEff"], got["CapBnd"])
		}
	}
	if got := sb.MustExec(t, "grep -E '^(Uid|Gid|Groups):' /proc/1/status | tr -s '\t ' ' '"); got != "Uid: 0 0 0 0\nGid: 0 0 0 0\nGroups: \n" {
		t.Errorf("the init's IDs: %q", got)
	}
}
