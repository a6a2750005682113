package confine

import (
	"encoding/binary"
	"slices"
	"syscall"
	"testing"

	"github.com/elastic/go-seccomp-bpf/arch"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/net/bpf"
)

// Return values of a seccomp filter.
const (
	retAllow  = 0x7fff0000
	retErrno  = 0x00050000
	retEPERM  = retErrno | uint32(syscall.EPERM)
	retENOSYS = retErrno | uint32(syscall.ENOSYS)
)

// Flags of clone and personality the table uses.
const (
	cloneThread     = 0x00010000 | 0x00000100 | 0x00000200 | 0x00000400 | 0x00000800 | 0x00040000 | 0x00080000 | 0x00100000 | 0x00200000
	cloneNewNS      = 0x00020000
	cloneNewUser    = 0x10000000
	cloneNewNet     = 0x40000000
	cloneNewPID     = 0x20000000
	cloneNewCgroup  = 0x02000000
	readImpliesExec = 0x0400000
	afVsock         = 40
	auditArchI386   = 0x40000003
	x32SyscallBit   = 0x40000000
)

// filter runs the compiled policy in a BPF interpreter: the table below
// checks what the kernel will be given, not the rules it was made from.
type filter struct {
	vm   *bpf.VM
	info *arch.Info
}

func newFilter(t *testing.T) filter {
	t.Helper()
	prog, err := Program()
	if err != nil {
		t.Fatal(err)
	}
	vm, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatal(err)
	}
	info, err := arch.GetInfo("")
	if err != nil {
		t.Fatal(err)
	}
	return filter{vm, info}
}

// run evaluates a system call as struct seccomp_data. The interpreter
// loads words big-endian, where the kernel loads them in native order,
// so each word is stored as the value a native load would see.
func (f filter) run(t *testing.T, archID, nr uint32, args ...uint64) uint32 {
	t.Helper()
	in := make([]byte, 64)
	binary.BigEndian.PutUint32(in[0:], nr)
	binary.BigEndian.PutUint32(in[4:], archID)
	for i, a := range args {
		lo, hi := uint32(a), uint32(a>>32)
		off := 16 + 8*i
		if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 { // big-endian host
			lo, hi = hi, lo
		}
		binary.BigEndian.PutUint32(in[off:], lo)
		binary.BigEndian.PutUint32(in[off+4:], hi)
	}
	ret, err := f.vm.Run(in)
	if err != nil {
		t.Fatal(err)
	}
	return uint32(ret)
}

func (f filter) call(t *testing.T, name string, args ...uint64) uint32 {
	t.Helper()
	nr, ok := f.info.SyscallNames[name]
	if !ok {
		t.Fatalf("no syscall %s on %s", name, f.info.Name)
	}
	return f.run(t, uint32(f.info.ID), uint32(nr), args...)
}

func TestPolicy(t *testing.T) {
	f := newFilter(t)
	tests := []struct {
		name    string
		syscall string
		args    []uint64
		want    uint32
	}{
		{"plain calls work", "getpid", nil, retAllow},
		{"files work", "openat", nil, retAllow},
		{"a thread can be made", "clone", []uint64{cloneThread}, retAllow},
		{"a process can be forked", "clone", []uint64{uint64(syscall.SIGCHLD)}, retAllow},
		{"no user namespace through clone", "clone", []uint64{cloneNewUser | uint64(syscall.SIGCHLD)}, retEPERM},
		{"no net namespace through clone", "clone", []uint64{cloneNewNet | uint64(syscall.SIGCHLD)}, retEPERM},
		{"no mount namespace through clone", "clone", []uint64{cloneNewNS}, retEPERM},
		{"no pid namespace through clone", "clone", []uint64{cloneNewPID | uint64(syscall.SIGCHLD)}, retEPERM},
		{"no cgroup namespace through clone", "clone", []uint64{cloneNewCgroup}, retEPERM},
		{"flags above 32 bits do not hide a namespace", "clone", []uint64{1<<32 | cloneNewUser}, retEPERM},
		{"clone3 sends libc back to clone", "clone3", nil, retENOSYS},
		{"unshare of nothing is still unshare", "unshare", []uint64{0}, retEPERM},
		{"ptrace within the sandbox, as Docker", "ptrace", nil, retAllow},
		{"chroot with CAP_SYS_CHROOT", "chroot", nil, retAllow},
		{"setuid for sudo", "setresuid", nil, retAllow},
		{"capset to drop", "capset", nil, retAllow},
		{"personality query", "personality", []uint64{0xffffffff}, retAllow},
		{"personality linux", "personality", []uint64{0}, retAllow},
		{"personality READ_IMPLIES_EXEC", "personality", []uint64{readImpliesExec}, retEPERM},
		{"inet sockets", "socket", []uint64{uint64(syscall.AF_INET)}, retAllow},
		{"netlink sockets (ip, ss)", "socket", []uint64{uint64(syscall.AF_NETLINK)}, retAllow},
		{"vsock sockets", "socket", []uint64{afVsock}, retEPERM},
		{"adjtimex reads, the kernel refuses to set", "adjtimex", nil, retAllow},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := f.call(t, tt.syscall, tt.args...); got != tt.want {
				t.Errorf("%s%v: %#x, want %#x", tt.syscall, tt.args, got, tt.want)
			}
		})
	}
}

// Every system call on the deny list fails with EPERM.
func TestPolicyDenied(t *testing.T) {
	f := newFilter(t)
	for _, name := range denied {
		if _, ok := f.info.SyscallNames[name]; !ok {
			continue // not on this architecture (iopl on arm64)
		}
		if got := f.call(t, name); got != retEPERM {
			t.Errorf("%s: %#x, want EPERM", name, got)
		}
	}
}

// The deny list names real system calls: a typo would guard nothing.
func TestDeniedNamesExist(t *testing.T) {
	for _, name := range denied {
		_, amd64 := arch.X86_64.SyscallNames[name]
		_, arm64 := arch.AARCH64.SyscallNames[name]
		if !amd64 && !arm64 {
			t.Errorf("%s is a system call of neither x86-64 nor arm64", name)
		}
	}
}

func TestForeignABIs(t *testing.T) {
	f := newFilter(t)
	getpid := uint32(f.info.SyscallNames["getpid"])
	if f.info.ID == arch.X86_64.ID {
		// i386's getpid through int 0x80 is 20.
		if got := f.run(t, uint32(arch.I386.ID), 20); got != retEPERM {
			t.Errorf("i386 getpid: %#x, want EPERM", got)
		}
		if got := f.run(t, uint32(f.info.ID), getpid|x32SyscallBit); got != retENOSYS {
			t.Errorf("x32 getpid: %#x, want ENOSYS", got)
		}
	}
	if got := f.run(t, auditArchI386+0x1000, getpid); got != retEPERM {
		t.Errorf("unknown architecture: %#x, want EPERM", got)
	}
}

func TestCapabilities(t *testing.T) {
	var nums []int
	for _, c := range Capabilities {
		if slices.Contains(nums, c.Number) {
			t.Errorf("%s: number %d twice", c.Name, c.Number)
		}
		nums = append(nums, c.Number)
	}
	// The capabilities that would undo the filter or the namespaces are
	// not among them.
	for _, n := range []int{12, 16, 17, 19, 21, 24} { // NET_ADMIN, SYS_MODULE, SYS_RAWIO, SYS_PTRACE, SYS_ADMIN, SYS_RESOURCE
		if slices.Contains(CapabilityNumbers(), n) {
			t.Errorf("capability %d is kept", n)
		}
	}
	if len(Capabilities) != 14 {
		t.Errorf("%d capabilities, Docker's default set has 14", len(Capabilities))
	}
}

func TestFilterEncoding(t *testing.T) {
	b, err := Filter()
	if err != nil {
		t.Fatal(err)
	}
	prog, err := Program()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 8*len(prog) || len(prog) > maxInstructions {
		t.Errorf("%d bytes for %d instructions", len(b), len(prog))
	}
	t.Logf("filter: %d instructions", len(prog))
}

// translate refuses what it cannot express rather than loosen or drop it.
func TestTranslateRefuses(t *testing.T) {
	info, err := arch.GetInfo("")
	if err != nil {
		t.Fatal(err)
	}
	eperm, enosys := uint(syscall.EPERM), uint(syscall.ENOSYS)
	allow := func(names ...string) specs.LinuxSyscall {
		return specs.LinuxSyscall{Names: names, Action: specs.ActAllow}
	}
	tests := []struct {
		name string
		p    specs.LinuxSeccomp
	}{
		{"default allow", specs.LinuxSeccomp{DefaultAction: specs.ActAllow}},
		{"default errno other than EPERM", specs.LinuxSeccomp{DefaultAction: specs.ActErrno, DefaultErrnoRet: &enosys}},
		{"kill action", specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{{Names: []string{"read"}, Action: specs.ActKill}}}},
		{"masked compare with a result", specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{{Names: []string{"clone"}, Action: specs.ActAllow,
			Args: []specs.LinuxSeccompArg{{Index: 0, Value: 0xff, ValueTwo: 1, Op: specs.OpMaskedEqual}}}}}},
		{"argument 6", specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{{Names: []string{"read"}, Action: specs.ActAllow,
			Args: []specs.LinuxSeccompArg{{Index: 6, Op: specs.OpEqualTo}}}}}},
		{"one call, two actions", specs.LinuxSeccomp{DefaultAction: specs.ActErrno, DefaultErrnoRet: &eperm, Syscalls: []specs.LinuxSyscall{allow("read"),
			{Names: []string{"read"}, Action: specs.ActErrno, ErrnoRet: &enosys}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := translate(&tt.p, info); err == nil {
				t.Error("translated")
			}
		})
	}
	// An allow rule naming a denied call is dropped, whatever the profile.
	p, err := translate(&specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{allow("read", "keyctl", "mount")}}, info)
	if err != nil {
		t.Fatal(err)
	}
	if names := p.Syscalls[0].Names; !slices.Equal(names, []string{"read"}) {
		t.Errorf("allowed %v, want only read", names)
	}
}
