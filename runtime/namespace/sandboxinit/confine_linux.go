package sandboxinit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
	"unsafe"
)

// Constants of prctl(2), seccomp(2) and capset(2) the standard library
// does not name.
const (
	prCapbsetRead          = 0x17
	prCapAmbient           = 0x2f
	prCapAmbientClearAll   = 4
	seccompModeFilter      = 2 // prctl(PR_SET_SECCOMP)'s
	seccompSetModeFilter   = 1 // seccomp(2)'s
	seccompFilterFlagTSync = 1
	capabilityVersion3     = 0x20080522
	// maxFilterLen is the kernel's limit on a filter (BPF_MAXINSNS).
	maxFilterLen = 4096
)

// confine bounds the sandbox before anything of the user's runs in it:
// it installs the syscall filter, then drops every capability but
// cfg.Caps from all of this process's sets, the bounding set included,
// so envd and whatever it starts (root, or setuid programs like sudo)
// can never hold more.
//
// The order matters. Installing a filter without no_new_privs, which
// would break sudo, takes CAP_SYS_ADMIN in the sandbox's user namespace,
// so the filter comes first; dropping from the bounding set takes
// CAP_SETPCAP, which the sandbox keeps.
//
// Filters and capabilities belong to threads in Linux. The filter goes
// to every thread of the init at once (SECCOMP_FILTER_FLAG_TSYNC), and
// the permitted and effective sets are lowered on each (AllThreadsSyscall).
// The bounding set is dropped on this thread only, the one runInit locked:
// it is the thread that forks envd and its restarts, and what a process
// can gain at exec depends only on the bounding set of the thread that
// forked it; the others run the Go runtime and never exec. (A round over
// every thread for each of some thirty capabilities cost milliseconds on
// each sandbox start.)
func confine(cfg Config) error {
	if cfg.Unconfined {
		return nil
	}
	if len(cfg.Seccomp) == 0 {
		return errors.New("confine: no syscall filter in the config (the driver sends one unless it is told to leave the sandbox unconfined)")
	}
	if err := installFilter(cfg.Seccomp); err != nil {
		return fmt.Errorf("install syscall filter: %w", err)
	}
	if err := boundCapabilities(cfg.Caps); err != nil {
		return fmt.Errorf("drop capabilities: %w", err)
	}
	// Sandbox root now holds the init's capabilities, which would let it
	// ptrace the init (or write its /proc/1/mem) and run code on a thread
	// whose bounding set is whole. Not dumpable, the init can be traced
	// only with CAP_SYS_PTRACE, which the sandbox lacks.
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_DUMPABLE, 0, 0); e != 0 {
		return fmt.Errorf("make the init undumpable: %w", e)
	}
	return nil
}

// installFilter installs a classic BPF program (struct sock_filter
// entries in native byte order) as the seccomp filter of every thread.
func installFilter(b []byte) error {
	if len(b)%8 != 0 || len(b)/8 > maxFilterLen {
		return fmt.Errorf("filter of %d bytes is not a program of at most %d instructions", len(b), maxFilterLen)
	}
	insts := make([]syscall.SockFilter, len(b)/8)
	for i := range insts {
		e := b[8*i:]
		insts[i] = syscall.SockFilter{Code: binary.NativeEndian.Uint16(e), Jt: e[2], Jf: e[3], K: binary.NativeEndian.Uint32(e[4:])}
	}
	prog := syscall.SockFprog{Len: uint16(len(insts)), Filter: &insts[0]}
	nr := sysSeccomp
	if nr < 0 {
		// No seccomp(2) number here: each thread installs a copy.
		if _, _, e := syscall.AllThreadsSyscall(syscall.SYS_PRCTL, syscall.PR_SET_SECCOMP, seccompModeFilter, uintptr(unsafe.Pointer(&prog))); e != 0 {
			return e
		}
		return nil
	}
	// One filter, prepared once by the kernel, for every thread. With
	// TSYNC, a positive answer is the ID of a thread that could not be
	// synchronised.
	r, _, e := syscall.RawSyscall(uintptr(nr), seccompSetModeFilter, seccompFilterFlagTSync, uintptr(unsafe.Pointer(&prog)))
	if e != 0 {
		return e
	}
	if r != 0 {
		return fmt.Errorf("thread %d could not take the filter", r)
	}
	return nil
}

// becomeRoot waits until the driver has mapped this user namespace's IDs
// (IDsMapped on FDConfig), then takes root's IDs in it on every thread,
// with no supplementary groups. The init was executed unmapped, its
// capabilities carried across the exec as ambient ones; it keeps them as
// root, and clears the ambient and inheritable sets, on every thread, as
// an exec as root would have left them.
func becomeRoot() error {
	var b [1]byte
	for {
		n, err := syscall.Read(FDConfig, b[:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil || n != 1 || b[0] != IDsMapped {
			return fmt.Errorf("wait for the user namespace's ID maps: read %q, %v", b[:max(n, 0)], err)
		}
		break
	}
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setresgid(0, 0, 0); err != nil {
		return fmt.Errorf("setresgid: %w", err)
	}
	if err := syscall.Setresuid(0, 0, 0); err != nil {
		return fmt.Errorf("setresuid: %w", err)
	}
	if _, _, e := syscall.AllThreadsSyscall(syscall.SYS_PRCTL, prCapAmbient, prCapAmbientClearAll, 0); e != 0 {
		return fmt.Errorf("clear the ambient set: %w", e)
	}
	hdr := capHeader{capabilityVersion3, 0}
	var data [2]capData
	if _, _, e := syscall.RawSyscall(syscall.SYS_CAPGET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return fmt.Errorf("capget: %w", e)
	}
	data[0].inheritable, data[1].inheritable = 0, 0
	if _, _, e := syscall.AllThreadsSyscall(syscall.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return fmt.Errorf("clear the inheritable set: %w", e)
	}
	return nil
}

// capHeader and capData are capget's and capset's structs.
type capHeader struct {
	version uint32
	pid     int32
}

type capData struct{ effective, permitted, inheritable uint32 }

// boundCapabilities keeps only the capabilities keep: it drops the others
// from this thread's bounding set (what an exec can ever grant, root's and
// setuid programs' included) and clears its ambient set, then, on every
// thread, clears the inheritable set and lowers the permitted and
// effective sets to keep.
func boundCapabilities(keep []int) error {
	var mask uint64
	for _, c := range keep {
		if c < 0 || c > 63 {
			return fmt.Errorf("capability %d does not exist", c)
		}
		mask |= 1 << c
	}
	for c := uintptr(0); c < 64; c++ {
		// The bounding set names every capability this kernel knows;
		// reading one beyond the last fails.
		if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prCapbsetRead, c, 0); e == syscall.EINVAL {
			break
		}
		if mask&(1<<c) != 0 {
			continue
		}
		if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_CAPBSET_DROP, c, 0); e != 0 {
			return fmt.Errorf("bounding set, capability %d: %w", c, e)
		}
	}
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prCapAmbient, prCapAmbientClearAll, 0); e != 0 && e != syscall.EINVAL {
		return fmt.Errorf("ambient set: %w", e) // EINVAL: a kernel before ambient capabilities
	}
	hdr := capHeader{capabilityVersion3, 0}
	data := [2]capData{
		{effective: uint32(mask), permitted: uint32(mask)},
		{effective: uint32(mask >> 32), permitted: uint32(mask >> 32)},
	}
	if _, _, e := syscall.AllThreadsSyscall(syscall.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return fmt.Errorf("capset: %w", e)
	}
	return nil
}
