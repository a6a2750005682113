package namespace

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"roost.dev/roost/runtime/namespace/sandboxinit"
	"roost.dev/roost/runtime/proc"
)

// What a sandbox sees of the kernel's pseudo filesystems. The driver, as
// host root and in the host's mount namespace, mounts /proc and /sys below
// the sandbox's root and masks paths in them as Docker does. Mounts made
// there reach the init's mount namespace, which belongs to the sandbox's
// user namespace, locked (MNT_LOCKED): /sys because it exists when the
// init's namespace is copied, /proc by propagation, since the procfs of
// the sandbox's pid namespace can only exist after the init started. So
// the sandbox's root can neither unmount a mask nor the filesystem under
// it, and cannot mount an unmasked procfs either (the kernel refuses a
// procfs more revealing than the one it sees).

// maskedPaths are hidden behind an empty directory or /dev/null:
// Docker's list, and the loop block devices, whose backing_file names
// every sandbox's disk image, and so its ID.
var maskedPaths = []string{
	"proc/acpi", "proc/kcore", "proc/keys", "proc/latency_stats", "proc/timer_list",
	"proc/timer_stats", "proc/sched_debug", "proc/scsi",
	"sys/firmware", "sys/devices/virtual/powercap", "sys/devices/virtual/block",
}

// readOnlyPaths are bound read-only onto themselves, as Docker does.
var readOnlyPaths = []string{"proc/bus", "proc/fs", "proc/irq", "proc/sys", "proc/sysrq-trigger"}

// sysFlags mount a pseudo filesystem for reading only.
const sysFlags = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC

// shareRoot makes the sandbox's root a shared mount, so that what the
// driver mounts below it after the init started (its /proc) propagates
// into the init's mount namespace, where it arrives locked.
func shareRoot(rootfs string) error {
	if err := unix.Mount("", rootfs, "", unix.MS_SHARED, ""); err != nil {
		return fmt.Errorf("make sandbox root shared: %w", err)
	}
	return nil
}

// mountSys mounts a sysfs of the sandbox's network namespace (it lists
// that namespace's interfaces only) on rootfs/sys, read-only, and masks
// its paths. The sandbox cannot mount one itself: the network namespace
// belongs to the host's user namespace.
func mountSys(netns, rootfs string) error {
	dir, err := ownDir(rootfs, "sys")
	if err != nil {
		return err
	}
	defer dir.Close()
	target := fdPath(dir)
	if err := proc.InNetns(netns, func() error { return unix.Mount("sysfs", target, "sysfs", sysFlags, "") }); err != nil {
		return fmt.Errorf("mount sysfs: %w", err)
	}
	return mask(rootfs, "sys/")
}

// attachProc mounts the procfs the sandbox's init offered (statusLine,
// see sandboxinit.StatusProc) on rootfs/proc with its masks. The tree is
// put together in stateDir first and moved into place whole: a tree that
// propagates into a namespace of another user namespace arrives with its
// children locked, not its top, so the masks must be children of the
// mount that propagates. (The sandbox may then detach /proc as a whole,
// which shows the empty directory under it, and no more: it cannot mount
// another procfs while none it sees is fully visible.)
func attachProc(pid int, stateDir, rootfs, statusLine string) error {
	n, err := strconv.Atoi(strings.TrimPrefix(statusLine, sandboxinit.StatusProc+" "))
	if err != nil || !strings.HasPrefix(statusLine, sandboxinit.StatusProc+" ") {
		return fmt.Errorf("sandbox init: unexpected %q", statusLine)
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("pidfd of sandbox init: %w", err)
	}
	defer unix.Close(pidfd)
	fs, err := unix.PidfdGetfd(pidfd, n, 0)
	if err != nil {
		return fmt.Errorf("take sandbox procfs: %w", err)
	}
	defer unix.Close(fs)
	staging := procStaging(stateDir)
	if err := os.Mkdir(staging, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("procfs: %w", err)
	}
	defer func() {
		_ = unmount(staging) // only left mounted if a step failed
		_ = os.Remove(staging)
	}()
	if err := unix.MoveMount(fs, "", unix.AT_FDCWD, staging, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach sandbox procfs: %w", err)
	}
	if err := mask(stateDir, "proc/"); err != nil {
		return err
	}
	dir, err := ownDir(rootfs, "proc")
	if err != nil {
		return err
	}
	defer dir.Close()
	if err := unix.MoveMount(unix.AT_FDCWD, staging, int(dir.Fd()), "", unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return fmt.Errorf("move sandbox procfs: %w", err)
	}
	return nil
}

// procStaging is where the sandbox's /proc is put together.
func procStaging(stateDir string) string { return filepath.Join(stateDir, "proc") }

// mask applies maskedPaths and readOnlyPaths under prefix. The paths are
// in a procfs or sysfs the driver just mounted: the kernel made them, not
// the template, so they are followed as they are. Paths this kernel does
// not have are skipped.
func mask(rootfs, prefix string) error {
	for _, p := range maskedPaths {
		if !strings.HasPrefix(p, prefix) {
			continue
		}
		target := filepath.Join(rootfs, p)
		st, err := os.Stat(target)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err == nil {
			if st.IsDir() {
				err = attach(emptyTmpfs, target)
			} else {
				err = attach(func() (int, error) {
					return readOnlyTree("/dev/null", unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NOEXEC)
				}, target)
			}
		}
		if err != nil {
			return fmt.Errorf("mask /%s: %w", p, err)
		}
	}
	for _, p := range readOnlyPaths {
		if !strings.HasPrefix(p, prefix) {
			continue
		}
		target := filepath.Join(rootfs, p)
		if _, err := os.Stat(target); errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err := attach(func() (int, error) { return readOnlyTree(target, sysAttrs) }, target); err != nil {
			return fmt.Errorf("make /%s read-only: %w", p, err)
		}
	}
	return nil
}

// sysAttrs are sysFlags as mount attributes.
const sysAttrs = unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOEXEC

// attach mounts on target the detached mount mk returns. A mount is
// made whole before it is attached: a mount that propagates to the init's
// namespace arrives with the flags it had, and a later remount would not
// follow it there.
func attach(mk func() (int, error), target string) error {
	fd, err := mk()
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.MoveMount(fd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH)
}

// readOnlyTree is a detached bind of path with attrs.
func readOnlyTree(path string, attrs uint64) (int, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, path, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("open_tree %s: %w", path, err)
	}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &unix.MountAttr{Attr_set: attrs}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("mount_setattr %s: %w", path, err)
	}
	return fd, nil
}

// emptyTmpfs is a detached, empty, read-only tmpfs, which a masked
// directory shows (a tmpfs rather than a bind of an empty host directory,
// whose host path the sandbox's mountinfo would show).
func emptyTmpfs() (int, error) {
	fs, err := unix.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("fsopen tmpfs: %w", err)
	}
	defer unix.Close(fs)
	for k, v := range map[string]string{"size": "4k", "mode": "555"} {
		if err := unix.FsconfigSetString(fs, k, v); err != nil {
			return -1, fmt.Errorf("tmpfs %s=%s: %w", k, v, err)
		}
	}
	if err := unix.FsconfigCreate(fs); err != nil {
		return -1, fmt.Errorf("create tmpfs: %w", err)
	}
	fd, err := unix.Fsmount(fs, unix.FSMOUNT_CLOEXEC, sysAttrs)
	if err != nil {
		return -1, fmt.Errorf("fsmount tmpfs: %w", err)
	}
	return fd, nil
}

// ownDir opens rootfs/name, a directory of the template's (made when it
// lacks one), without following a symbolic link: the driver mounts on it
// as host root, and a template's /proc -> /etc must not lead it there.
func ownDir(rootfs, name string) (*os.File, error) {
	p := filepath.Join(rootfs, name)
	if err := os.Mkdir(p, 0o555); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("/%s: %w", name, err)
	}
	fd, err := unix.Open(p, unix.O_PATH|unix.O_NOFOLLOW|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("the template's /%s is not a directory: %w", name, err)
	}
	return os.NewFile(uintptr(fd), p), nil
}

// fdPath names an open file by its descriptor, for system calls that take
// a path: the kernel resolves it to the very file.
func fdPath(f *os.File) string { return "/proc/self/fd/" + strconv.Itoa(int(f.Fd())) }
