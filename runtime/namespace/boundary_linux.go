package namespace

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

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
// see sandboxinit.StatusProc) on rootfs/proc with its masks and bootID
// (see bindBootID; none when empty). The tree is
// put together in stateDir first and moved into place whole: a tree that
// propagates into a namespace of another user namespace arrives with its
// children locked, not its top, so the masks must be children of the
// mount that propagates. (The sandbox may then detach /proc as a whole,
// which shows the empty directory under it, and no more: it cannot mount
// another procfs while none it sees is fully visible.)
func attachProc(pid int, stateDir, rootfs, statusLine, bootID string) error {
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
	return attachProcTree(fs, stateDir, rootfs, bootID)
}

// attachProcTree mounts the detached procfs fs on rootfs/proc with its
// masks and bootID, put together in stateDir (see attachProc).
func attachProcTree(fs int, stateDir, rootfs, bootID string) error {
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
	if err := bindBootID(stateDir, bootID); err != nil {
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

// detachHostCopies removes the host namespace's copies of the sandbox's
// /proc and /sys trees once the sandbox holds its own: they are a dozen
// mounts (the masks) that only had to exist for their propagation into
// the sandbox's namespace, whose mounts are private since. Left in place
// they would cost every later create on the host: a new mount namespace
// copies all the host's mounts, and the init's setup walks them twice.
// Unmounting does not reach the sandbox (nothing propagates into a
// private mount) and does not follow a symlink at rootfs/proc or
// rootfs/sys.
func detachHostCopies(rootfs string) error {
	var errs []error
	for _, dir := range []string{"proc", "sys"} {
		target := filepath.Join(rootfs, dir)
		err := unix.Unmount(target, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
		if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("detach the host's copy of %s: %w", target, err))
		}
	}
	return errors.Join(errs...)
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

// The boot id. A sandbox shares the host's kernel, whose boot id
// (/proc/sys/kernel/random/boot_id) changes only when the host boots: a
// sandbox booted afresh (runtime.Halter) would read the same one, and two
// sandboxes would read each other's. Each create and boot of a sandbox
// has an id of its own instead, a file bound over the kernel's in its
// procfs as the masks are, and so locked and read-only. The file is on a
// tmpfs of its own, not in the state directory, whose host path the
// sandbox's mountinfo would show. A CRIU restore goes on with the same
// boot: it binds the record's id again (see Restore).

// bootIDPath is the kernel's boot id in a procfs below a root.
const bootIDPath = "proc/sys/kernel/random/boot_id"

// newBootID returns a random boot id written as the kernel writes its
// own: a version 4 UUID.
func newBootID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("boot id: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], nil
}

// bindBootID binds a read-only file holding bootID over the boot id of
// the procfs being put together in stateDir; an empty bootID (a sandbox of
// an older driver, restored) binds nothing.
func bindBootID(stateDir, bootID string) error {
	if bootID == "" {
		return nil
	}
	target := filepath.Join(stateDir, bootIDPath)
	if _, err := os.Stat(target); err != nil {
		return fmt.Errorf("boot id: %w", err)
	}
	src, err := stageBootID(stateDir, bootID)
	defer unstageBootID(stateDir)
	if err != nil {
		return err
	}
	if err := attach(func() (int, error) { return readOnlyTree(src, sysAttrs) }, target); err != nil {
		return fmt.Errorf("bind boot id: %w", err)
	}
	return nil
}

// stageBootID mounts a small tmpfs in stateDir holding bootID in a file,
// made read-only (the filesystem, so that no bind of it can be written),
// and returns the file's path. unstageBootID detaches it; a bind of the
// file keeps the tmpfs alive.
func stageBootID(stateDir, bootID string) (string, error) {
	dir := bootIDStaging(stateDir)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("boot id: %w", err)
	}
	const flags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	if err := unix.Mount("tmpfs", dir, "tmpfs", flags, "size=4k,mode=0755"); err != nil {
		return "", fmt.Errorf("boot id: mount tmpfs: %w", err)
	}
	file := filepath.Join(dir, "boot_id")
	if err := os.WriteFile(file, []byte(bootID+"\n"), 0o444); err != nil {
		return "", fmt.Errorf("boot id: %w", err)
	}
	if err := remountReadOnly(dir, flags); err != nil {
		return "", fmt.Errorf("boot id: make tmpfs read-only: %w", err)
	}
	return file, nil
}

// remountReadOnly makes the filesystem at dir read-only. The kernel
// refuses (EBUSY) while a file of it is open for writing, and a process
// this one forks at that moment holds a copy of the file just written
// until it execs: so EBUSY is tried again for a while.
func remountReadOnly(dir string, flags uintptr) error {
	deadline := time.Now().Add(time.Second)
	for {
		err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY|flags, "")
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// unstageBootID detaches and removes what stageBootID made.
func unstageBootID(stateDir string) {
	_ = unmount(bootIDStaging(stateDir))
	_ = os.Remove(bootIDStaging(stateDir))
}

func bootIDStaging(stateDir string) string { return filepath.Join(stateDir, "bootid") }

// keyBootID is CRIU's key of the boot id's mount, an external one (see
// mountExternals): a restore binds the same id again.
const keyBootID = "bootid"

// restoreBootID stages bootID for a CRIU restore and returns the
// arguments that hand it to CRIU; none for a sandbox of an older driver,
// which had none. The caller calls unstageBootID once CRIU is done.
func restoreBootID(stateDir, bootID string) ([]string, error) {
	if bootID == "" {
		return nil, nil
	}
	src, err := stageBootID(stateDir, bootID)
	if err != nil {
		return nil, err
	}
	return []string{"--external", "mnt[" + keyBootID + "]:" + src}, nil
}
