package namespace

import (
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"roost.dev/roost/runtime/proc"
)

// The mount namespace inits start from. A new mount namespace is a copy
// of its creator's whole mount table: an init started from the host's
// namespace copied every mount of every sandbox on the host (each one's
// disk and root), made them all private and detached them again at its
// pivot_root, all under the kernel's global namespace lock. That made a
// start cost grow with the sandboxes already running (a create at 1,000
// running took 6× one at an empty host, most of it in these copies).
//
// So an init starts from a thread in a namespace made for that start: a
// copy of the spawn namespace, whose root is a small tmpfs holding only
// what an init uses before its pivot_root (the host's /dev, for the
// device nodes it binds; a procfs, to execute itself; the host's cgroup
// hierarchies, to bind its own groups), to which the thread attaches, at
// spawnRoot, a copy of the new sandbox's root tree. That copy keeps the
// root's peer group, so what the driver mounts on the root in the host's
// namespace after the start (the init's /proc) still propagates into the
// init's namespace; and the init's namespace, a copy made across user
// namespaces, holds it all locked, as before. The spawn namespace holds
// no copy of the host's other mounts: a filesystem the host unmounts is
// not kept busy by it.

// spawnRoot is where an init finds its sandbox's root tree (its
// Config.RootFS): the same place in every start's namespace.
const spawnRoot = "/sandbox"

// spawnNS is the driver's spawn namespace, made at its first start.
type spawnNS struct {
	mu sync.Mutex
	fd int // its nsfs file, open for the driver's life; 0 until made
}

// spawnNamespace is the spawn namespace's file, made at the first call
// (and at the next one, if making it failed).
func (d *Driver) spawnNamespace() (int, error) {
	d.spawn.mu.Lock()
	defer d.spawn.mu.Unlock()
	if d.spawn.fd > 0 {
		return d.spawn.fd, nil
	}
	err := proc.OnThrowawayThread(func() error {
		fd, err := newSpawnNS()
		if err == nil {
			d.spawn.fd = fd
		}
		return err
	})
	if err != nil {
		return -1, fmt.Errorf("make the mount namespace sandboxes start from: %w", err)
	}
	return d.spawn.fd, nil
}

// newSpawnNS moves the calling thread into a new mount namespace whose
// root is the spawn namespace's tmpfs (see above), and returns a file
// that keeps the namespace.
func newSpawnNS() (int, error) {
	if err := unix.Unshare(unix.CLONE_FS | unix.CLONE_NEWNS); err != nil {
		return -1, fmt.Errorf("unshare: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return -1, fmt.Errorf("make mounts private: %w", err)
	}
	// Built on /tmp of this private copy of the host's table, then made
	// the root; the host's mounts go with the old root.
	const top = "/tmp"
	if err := unix.Mount("roost-spawn", top, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=755,size=64k"); err != nil {
		return -1, fmt.Errorf("mount its root: %w", err)
	}
	for _, m := range []struct {
		source, target, fstype string
		flags                  uintptr
	}{
		{"/dev", "dev", "", unix.MS_BIND},
		{"proc", "proc", "proc", unix.MS_NOSUID | unix.MS_NODEV},
		{"/sys/fs/cgroup", "sys/fs/cgroup", "", unix.MS_BIND | unix.MS_REC},
	} {
		target := top + "/" + m.target
		if err := os.MkdirAll(target, 0o755); err != nil {
			return -1, err
		}
		if err := unix.Mount(m.source, target, m.fstype, m.flags, ""); err != nil {
			return -1, fmt.Errorf("mount %s on %s: %w", m.source, m.target, err)
		}
	}
	for _, dir := range []string{spawnRoot, "/old"} {
		if err := os.Mkdir(top+dir, 0o755); err != nil {
			return -1, err
		}
	}
	if err := unix.PivotRoot(top, top+"/old"); err != nil {
		return -1, fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return -1, err
	}
	if err := unix.Unmount("/old", unix.MNT_DETACH); err != nil {
		return -1, fmt.Errorf("detach the host's mounts: %w", err)
	}
	if err := os.Remove("/old"); err != nil {
		return -1, err
	}
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=755,size=64k"); err != nil {
		return -1, fmt.Errorf("make its root read-only: %w", err)
	}
	return unix.Open("/proc/thread-self/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
}

// enterSpawnNS moves the calling thread (locked, and ended after the
// start) into a new copy of the spawn namespace ns and attaches tree
// there at spawnRoot: a detached copy of the sandbox's root tree
// (openRootTree).
func enterSpawnNS(ns, tree int) error {
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fmt.Errorf("unshare filesystem attributes: %w", err)
	}
	if err := unix.Setns(ns, unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("enter the spawn namespace: %w", err)
	}
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("copy the spawn namespace: %w", err)
	}
	if err := unix.MoveMount(tree, "", unix.AT_FDCWD, spawnRoot, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach the sandbox's root: %w", err)
	}
	return nil
}

// openRootTree is a detached copy of the mount tree at rootfs (the
// sandbox's root, its /sys and volumes), in rootfs's peer group.
func openRootTree(rootfs string) (int, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, rootfs, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return -1, fmt.Errorf("copy the sandbox's root tree: %w", err)
	}
	return fd, nil
}
