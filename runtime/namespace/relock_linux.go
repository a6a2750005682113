package namespace

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
	"roost.dev/roost/runtime/proc"
)

// Locking a restored sandbox's boundary again. CRIU rebuilds the
// sandbox's mount namespace from inside the sandbox's user namespace:
// every mount it makes is the sandbox's own, masks included, and root in
// the sandbox could unmount them (or, seeing a fully visible procfs,
// mount another). Mounts reach a namespace of a less privileged user
// namespace locked only when copied or propagated there from a more
// privileged one, and CRIU's namespace is neither. So once CRIU is done,
// relock has the sandbox's root follow the sandbox root the driver
// mounted in the host's namespace, and mounts /proc and /sys there as a
// create does: they propagate into the sandbox with their children
// locked.
//
// Step by step, the driver, from a thread of its own that entered the
// sandbox's mount namespace (as host root):
//  1. keeps a copy of the procfs CRIU mounted (of the restored pid
//     namespace, which the driver cannot make from outside), detaches
//     CRIU's /proc and /sys with everything under them, but for the
//     cgroup mounts the init made under /sys/fs/cgroup, moved aside;
//  2. from the host's namespace, makes the sandbox's root mount a slave
//     of the driver's (MOVE_MOUNT_SET_GROUP, which CRIU itself restores
//     sharing with) and mounts the procfs with its masks on the driver's
//     rootfs/proc, and a sysfs with its masks stacked on an empty tmpfs on
//     rootfs/sys: the tmpfs is the top that arrives unlocked, the sysfs
//     over it arrives locked, as the masks do;
//  3. back in the sandbox's namespace, puts the cgroup mounts back on
//     /sys/fs/cgroup (before the procfs arrives where they waited) and
//     at the end makes its mounts private again, as a create leaves
//     them (a dump would otherwise meet masters outside the namespace).
//
// The restored processes run while this happens (CRIU has let them go):
// for those few milliseconds they see no /proc and /sys, and the init,
// which executes itself again through /proc, is told to only afterwards.

// relock gives the restored sandbox whose init is pid locked /proc and
// /sys (see above). netns is the sandbox's network namespace, bootID its
// boot id.
func relock(pid int, netns, stateDir, rootfs, bootID string) error {
	procfs, cgroups := -1, false
	defer func() {
		if procfs >= 0 {
			unix.Close(procfs)
		}
	}()
	err := inMountNS(pid, func() error {
		var err error
		if procfs, err = unix.OpenTree(unix.AT_FDCWD, "/proc", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC); err != nil {
			return fmt.Errorf("copy the restored procfs: %w", err)
		}
		if err := detachAll("/proc"); err != nil {
			return err
		}
		if cgroups, err = isMountRoot("/sys/fs/cgroup", "/sys"); err != nil || !cgroups {
			return errors.Join(err, detachAll("/sys"))
		}
		return errors.Join(moveMount("/sys/fs/cgroup", cgroupsAside), detachAll("/sys"))
	})
	if err != nil {
		return fmt.Errorf("relock: %w", err)
	}
	if err := followHostRoot(pid, stateDir, rootfs); err != nil {
		return fmt.Errorf("relock: %w", err)
	}
	if err := attachSysTree(netns, stateDir, rootfs); err != nil {
		return fmt.Errorf("relock: %w", err)
	}
	if cgroups {
		if err := inMountNS(pid, func() error { return moveMount(cgroupsAside, "/sys/fs/cgroup") }); err != nil {
			return fmt.Errorf("relock: %w", err)
		}
	}
	if err := attachProcTree(procfs, stateDir, rootfs, bootID); err != nil {
		return fmt.Errorf("relock: %w", err)
	}
	err = inMountNS(pid, func() error {
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			return fmt.Errorf("make the sandbox's mounts private: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("relock: %w", err)
	}
	return nil
}

// cgroupsAside is where the cgroup mounts wait, in the sandbox's
// namespace, while /sys is replaced: the empty directory /proc is while
// no procfs is on it. They are moved, not copied: the sandbox's
// processes hold files on them (the Go runtime its CPU quota), which a
// later dump must find in the sandbox's namespace.
const cgroupsAside = "/proc"

func moveMount(from, to string) error {
	if err := unix.MoveMount(unix.AT_FDCWD, from, unix.AT_FDCWD, to, 0); err != nil {
		return fmt.Errorf("move %s to %s: %w", from, to, err)
	}
	return nil
}

// isMountRoot says whether something is mounted on path, a directory
// below parent.
func isMountRoot(path, parent string) (bool, error) {
	p, err := mountID(parent)
	if err != nil {
		return false, err
	}
	m, err := mountID(path)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	return err == nil && m != p, err
}

// inMountNS runs fn on a thread of its own in the mount namespace of
// process pid, with that process's root as its root. The thread unshares
// its filesystem attributes first (setns refuses a mount namespace to a
// thread that shares them) and ends with fn: it never serves another
// goroutine.
func inMountNS(pid int, fn func() error) error {
	return proc.OnThrowawayThread(func() error { return enterMountNS(pid, fn) })
}

func enterMountNS(pid int, fn func() error) error {
	ns, err := unix.Open(fmt.Sprintf("/proc/%d/ns/mnt", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("mount namespace of %d: %w", pid, err)
	}
	defer unix.Close(ns)
	root, err := unix.Open(fmt.Sprintf("/proc/%d/root", pid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("root of %d: %w", pid, err)
	}
	defer unix.Close(root)
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fmt.Errorf("unshare filesystem attributes: %w", err)
	}
	if err := unix.Setns(ns, unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("enter mount namespace of %d: %w", pid, err)
	}
	if err := unix.Fchdir(root); err != nil {
		return fmt.Errorf("enter root of %d: %w", pid, err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("enter root of %d: %w", pid, err)
	}
	return fn()
}

func mountID(path string) (uint64, error) {
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &st); err != nil {
		return 0, fmt.Errorf("statx %s: %w", path, err)
	}
	return st.Mnt_id, nil
}

// detachAll detaches every mount stacked on dir, with what is below them.
func detachAll(dir string) error {
	for range 16 {
		err := unix.Unmount(dir, unix.MNT_DETACH)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil // nothing (more) mounted there
		}
		if err != nil {
			return fmt.Errorf("detach %s: %w", dir, err)
		}
	}
	return fmt.Errorf("detach %s: still mounted after 16 detaches", dir)
}

// followHostRoot makes the root mount of process pid's namespace a slave
// of rootfs, the sandbox root in the host's namespace (a shared mount,
// see shareRoot), so that what the driver mounts below rootfs propagates
// there. The kernel takes the peer group from a slave bind of rootfs,
// made in stateDir for the purpose.
func followHostRoot(pid int, stateDir, rootfs string) error {
	dir := filepath.Join(stateDir, "follow")
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	defer os.Remove(dir)
	if err := unix.Mount(rootfs, dir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind sandbox root: %w", err)
	}
	defer unmount(dir)
	if err := unix.Mount("", dir, "", unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("make a slave of the sandbox root: %w", err)
	}
	to, err := unix.Open(fmt.Sprintf("/proc/%d/root", pid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("root of %d: %w", pid, err)
	}
	defer unix.Close(to)
	if err := unix.MoveMount(unix.AT_FDCWD, dir, to, "", unix.MOVE_MOUNT_SET_GROUP|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return fmt.Errorf("have the restored root follow the sandbox root: %w", err)
	}
	return nil
}

// attachSysTree mounts on rootfs/sys a sysfs of netns with its masks,
// stacked on an empty tmpfs, put together in stateDir and moved into
// place whole (see relock).
func attachSysTree(netns, stateDir, rootfs string) error {
	parent := filepath.Join(stateDir, "relock")
	staging := filepath.Join(parent, "sys")
	if err := os.MkdirAll(staging, 0o700); err != nil {
		return err
	}
	defer func() {
		_ = detachAll(staging) // only left mounted if a step failed
		_ = os.Remove(staging)
		_ = os.Remove(parent)
	}()
	if err := attach(emptyTmpfs, staging); err != nil {
		return err
	}
	// The tmpfs, held before the sysfs covers it: a path would name the
	// sysfs, and the tmpfs is what must move, with the sysfs on it.
	base, err := unix.Open(staging, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sysfs base: %w", err)
	}
	defer unix.Close(base)
	if err := mountSys(netns, parent); err != nil {
		return err
	}
	dir, err := ownDir(rootfs, "sys")
	if err != nil {
		return err
	}
	defer dir.Close()
	if err := unix.MoveMount(base, "", int(dir.Fd()), "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return fmt.Errorf("move sandbox sysfs: %w", err)
	}
	return nil
}
