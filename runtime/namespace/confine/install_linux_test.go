package confine

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// probeEnv makes the test binary, run again, install the filter and try
// system calls instead of running tests.
const probeEnv = "ROOST_CONFINE_PROBE"

func TestMain(m *testing.M) {
	if os.Getenv(probeEnv) == "1" {
		os.Exit(probe())
	}
	os.Exit(m.Run())
}

// probes are system calls tried under the installed filter, by name, with
// the errno each must fail with (0: it must succeed). None of them changes
// anything when it succeeds, except the unshares, which only the probe
// process would feel.
var probes = []struct {
	name string
	want syscall.Errno
	call func() syscall.Errno
}{
	{"getpid", 0, func() syscall.Errno { return raw(unix.SYS_GETPID) }},
	{"unshare(CLONE_NEWUSER)", syscall.EPERM, func() syscall.Errno { return raw(unix.SYS_UNSHARE, unix.CLONE_NEWUSER) }},
	{"unshare(CLONE_NEWNET)", syscall.EPERM, func() syscall.Errno { return raw(unix.SYS_UNSHARE, unix.CLONE_NEWNET) }},
	{"setns", syscall.EPERM, func() syscall.Errno { return raw(unix.SYS_SETNS, 0, unix.CLONE_NEWNET) }},
	{"clone3", syscall.ENOSYS, func() syscall.Errno { return raw(unix.SYS_CLONE3, 0, 0) }},
	{"keyctl", syscall.EPERM, func() syscall.Errno { return raw(unix.SYS_KEYCTL, unix.KEYCTL_GET_KEYRING_ID, 0) }},
	{"bpf", syscall.EPERM, func() syscall.Errno { return raw(unix.SYS_BPF, 0, 0, 0) }},
	{"perf_event_open", syscall.EPERM, func() syscall.Errno { return raw(unix.SYS_PERF_EVENT_OPEN, 0, 0, 0) }},
	{"io_uring_setup", syscall.EPERM, func() syscall.Errno { return raw(unix.SYS_IO_URING_SETUP, 1, 0) }},
	{"mount", syscall.EPERM, func() syscall.Errno { return raw(unix.SYS_MOUNT, 0, 0, 0) }},
	{"personality(query)", 0, func() syscall.Errno { return raw(unix.SYS_PERSONALITY, 0xffffffff) }},
}

func raw(nr uintptr, args ...uintptr) syscall.Errno {
	var a [3]uintptr
	copy(a[:], args)
	_, _, e := syscall.RawSyscall(nr, a[0], a[1], a[2])
	return e
}

// probe installs the filter the way a sandbox init does, but with
// no_new_privs so that it needs no privilege, then prints each probe's
// errno.
func probe() int {
	runtime.LockOSThread()
	b, err := Filter()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	insts := make([]unix.SockFilter, len(b)/8)
	for i := range insts {
		e := b[8*i:]
		insts[i] = unix.SockFilter{Code: binary.NativeEndian.Uint16(e), Jt: e[2], Jf: e[3], K: binary.NativeEndian.Uint32(e[4:])}
	}
	prog := unix.SockFprog{Len: uint16(len(insts)), Filter: &insts[0]}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "no_new_privs:", err)
		return 2
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog))); e != 0 {
		fmt.Fprintln(os.Stderr, "seccomp:", e)
		return 2
	}
	for _, p := range probes {
		fmt.Printf("%s=%d\n", p.name, int(p.call()))
	}
	return 0
}

// TestFilterDenies installs the compiled filter in a process of its own
// and tries the calls a sandbox must not make, and a few it must.
func TestFilterDenies(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), probeEnv+"=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("probe: %v: %s", err, out)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			got[k] = v
		}
	}
	for _, p := range probes {
		if want := fmt.Sprint(int(p.want)); got[p.name] != want {
			t.Errorf("%s under the filter: errno %s, want %d (%v)", p.name, got[p.name], p.want, p.want)
		}
	}
}
