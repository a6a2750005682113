package microvm

import (
	"encoding/binary"
	"fmt"
	"os"
	goruntime "runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// KVM ioctls (linux/kvm.h).
const (
	kvmGetAPIVersion       = 0xAE00
	kvmCreateVM            = 0xAE01
	kvmGetVCPUMmapSize     = 0xAE04
	kvmGetSupportedCPUID   = 0xC008AE05
	kvmCreateVCPU          = 0xAE41
	kvmSetUserMemoryRegion = 0x4020AE46
	kvmRun                 = 0xAE80
	kvmSetRegs             = 0x4090AE82
	kvmGetSregs            = 0x8138AE83
	kvmSetSregs            = 0x4138AE84

	kvmAPIVersion = 12
	kvmExitIO     = 2
)

// probeCode runs in real mode at probeEntry: mov al, 42; out 0x10, al; hlt.
var probeCode = []byte{0xb0, 42, 0xe6, 0x10, 0xf4}

const (
	probeEntry = 0x1000
	probePort  = 0x10
	probeValue = 42
)

// CheckKVM says whether the KVM device at dev can run a guest: it runs
// one (a vCPU executing a few real-mode instructions that write a value
// to an I/O port), and checks that the CPU KVM offers guests has the
// features every x86-64 kernel expects. A device node alone proves
// nothing: a nested or emulated KVM can run simple code yet offer a CPU
// no distribution kernel boots on (seen: no SSE3, where QEMU's guests
// hang silently), and a VMM that finds KVM broken fails in ways that say
// little.
func CheckKVM(dev string) error {
	done := make(chan error, 1)
	go func() {
		// The vCPU belongs to this thread while it runs.
		goruntime.LockOSThread()
		defer goruntime.UnlockOSThread()
		if err := runProbeVM(dev); err != nil {
			done <- err
			return
		}
		done <- checkGuestCPU(dev)
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		return fmt.Errorf("%s: a test guest did not finish in 5 s", dev)
	}
}

func runProbeVM(dev string) error {
	kvm, err := os.OpenFile(dev, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer kvm.Close()
	ioctl := func(fd uintptr, req, arg uintptr) (uintptr, error) {
		r, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, req, arg)
		if errno != 0 {
			return 0, errno
		}
		return r, nil
	}
	if v, err := ioctl(kvm.Fd(), kvmGetAPIVersion, 0); err != nil || v != kvmAPIVersion {
		return fmt.Errorf("%s: KVM API version %d (%v), want %d", dev, v, err, kvmAPIVersion)
	}
	vmfd, err := ioctl(kvm.Fd(), kvmCreateVM, 0)
	if err != nil {
		return fmt.Errorf("%s: create VM: %w", dev, err)
	}
	defer unix.Close(int(vmfd))

	mem, err := unix.Mmap(-1, 0, 0x10000, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return err
	}
	defer unix.Munmap(mem)
	copy(mem[probeEntry:], probeCode)
	region := struct {
		Slot, Flags                    uint32
		GuestPhys, Size, UserspaceAddr uint64
	}{Size: uint64(len(mem)), UserspaceAddr: uint64(uintptr(unsafe.Pointer(&mem[0])))}
	if _, err := ioctl(vmfd, kvmSetUserMemoryRegion, uintptr(unsafe.Pointer(&region))); err != nil {
		return fmt.Errorf("%s: guest memory: %w", dev, err)
	}
	vcpu, err := ioctl(vmfd, kvmCreateVCPU, 0)
	if err != nil {
		return fmt.Errorf("%s: create vCPU: %w", dev, err)
	}
	defer unix.Close(int(vcpu))
	size, err := ioctl(kvm.Fd(), kvmGetVCPUMmapSize, 0)
	if err != nil {
		return fmt.Errorf("%s: vCPU mmap size: %w", dev, err)
	}
	run, err := unix.Mmap(int(vcpu), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("%s: map vCPU state: %w", dev, err)
	}
	defer unix.Munmap(run)

	// Real mode with a flat code segment at 0: cs base and selector 0.
	var sregs [312]byte
	if _, err := ioctl(vcpu, kvmGetSregs, uintptr(unsafe.Pointer(&sregs[0]))); err != nil {
		return fmt.Errorf("%s: vCPU registers: %w", dev, err)
	}
	binary.NativeEndian.PutUint64(sregs[0:], 0)  // cs.base
	binary.NativeEndian.PutUint16(sregs[12:], 0) // cs.selector
	if _, err := ioctl(vcpu, kvmSetSregs, uintptr(unsafe.Pointer(&sregs[0]))); err != nil {
		return fmt.Errorf("%s: set vCPU segments: %w", dev, err)
	}
	var regs [18]uint64
	regs[16], regs[17] = probeEntry, 0x2 // rip, rflags (bit 1 is always set)
	if _, err := ioctl(vcpu, kvmSetRegs, uintptr(unsafe.Pointer(&regs[0]))); err != nil {
		return fmt.Errorf("%s: set vCPU registers: %w", dev, err)
	}
	if _, err := ioctl(vcpu, kvmRun, 0); err != nil {
		return fmt.Errorf("%s: run a test guest: %w", dev, err)
	}
	// struct kvm_run: exit_reason at 8; for KVM_EXIT_IO, at 32: direction
	// (u8), size (u8), port (u16), count (u32), data_offset (u64).
	reason := binary.NativeEndian.Uint32(run[8:])
	port := binary.NativeEndian.Uint16(run[34:])
	dataOff := binary.NativeEndian.Uint64(run[40:])
	if reason != kvmExitIO || port != probePort || dataOff >= uint64(len(run)) || run[dataOff] != probeValue {
		return fmt.Errorf("%s: a test guest did not run as written (exit reason %d, port %#x)", dev, reason, port)
	}
	return nil
}

// guestBaseline are the CPUID feature bits an x86-64 guest kernel
// expects: leaf, register (0 ecx, 1 edx), bit, name.
var guestBaseline = []struct {
	leaf uint32
	edx  bool
	bit  uint
	name string
}{
	{1, true, 0, "fpu"}, {1, true, 8, "cx8"}, {1, true, 15, "cmov"}, {1, true, 24, "fxsr"},
	{1, true, 25, "sse"}, {1, true, 26, "sse2"}, {1, false, 0, "sse3"}, {0x80000001, true, 29, "lm"},
}

// checkGuestCPU compares KVM_GET_SUPPORTED_CPUID with guestBaseline.
func checkGuestCPU(dev string) error {
	kvm, err := os.OpenFile(dev, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer kvm.Close()
	// struct kvm_cpuid2: nent, padding, then 40-byte entries: function,
	// index, flags, eax, ebx, ecx, edx, padding[3].
	const max, entry = 256, 40
	buf := make([]byte, 8+max*entry)
	binary.NativeEndian.PutUint32(buf, max)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, kvm.Fd(), kvmGetSupportedCPUID, uintptr(unsafe.Pointer(&buf[0]))); errno != 0 {
		return fmt.Errorf("%s: supported CPUID: %w", dev, errno)
	}
	regs := map[uint32][2]uint32{} // leaf (index 0) → ecx, edx
	for i := range int(binary.NativeEndian.Uint32(buf)) {
		e := buf[8+i*entry:]
		if binary.NativeEndian.Uint32(e[4:]) == 0 {
			regs[binary.NativeEndian.Uint32(e)] = [2]uint32{binary.NativeEndian.Uint32(e[20:]), binary.NativeEndian.Uint32(e[24:])}
		}
	}
	var missing []string
	for _, f := range guestBaseline {
		r := regs[f.leaf][0]
		if f.edx {
			r = regs[f.leaf][1]
		}
		if r&(1<<f.bit) == 0 {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s: KVM offers guests a CPU without %v, which x86-64 guest kernels need (a nested or emulated KVM?)", dev, missing)
	}
	return nil
}
