package sandboxinit

import (
	"fmt"
	"syscall"
	"unsafe"
)

// The new mount API's system calls share their numbers across
// architectures; package syscall names none of them.
const (
	sysFsopen   = 430
	sysFsconfig = 431
	sysFsmount  = 432

	fsopenCloexec     = 0x1
	fsconfigCmdCreate = 6
	fsmountCloexec    = 0x1
	mountAttrNosuid   = 0x2
	mountAttrNodev    = 0x4
	mountAttrNoexec   = 0x8
)

// offerProc makes a procfs of this pid namespace as a mount attached
// nowhere, and tells the driver which descriptor holds it (StatusProc).
// The init closes the descriptor once the driver has sent the Config.
func offerProc() (int, error) {
	fd, err := detachedProc()
	if err != nil {
		return -1, err
	}
	// Before the driver masks /proc/sys read-only.
	if err := limitUserCounts(fd); err != nil {
		syscall.Close(fd)
		return -1, err
	}
	if _, err := syscall.Write(FDStatus, fmt.Appendf(nil, "%s %d\n", StatusProc, fd)); err != nil {
		syscall.Close(fd)
		return -1, fmt.Errorf("offer procfs: %w", err)
	}
	return fd, nil
}

func detachedProc() (int, error) {
	name, err := syscall.BytePtrFromString("proc")
	if err != nil {
		return -1, err
	}
	fs, _, errno := syscall.Syscall(sysFsopen, uintptr(unsafe.Pointer(name)), fsopenCloexec, 0)
	if errno != 0 {
		return -1, fmt.Errorf("fsopen proc: %w", errno)
	}
	defer syscall.Close(int(fs))
	if _, _, errno := syscall.Syscall6(sysFsconfig, fs, fsconfigCmdCreate, 0, 0, 0, 0); errno != 0 {
		return -1, fmt.Errorf("create procfs: %w", errno)
	}
	m, _, errno := syscall.Syscall(sysFsmount, fs, fsmountCloexec, mountAttrNosuid|mountAttrNodev|mountAttrNoexec)
	if errno != 0 {
		return -1, fmt.Errorf("fsmount proc: %w", errno)
	}
	return int(m), nil
}
