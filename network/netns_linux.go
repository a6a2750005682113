package network

import (
	"errors"
	"fmt"
	"os"
	goruntime "runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"roost.dev/roost/errdefs"
)

// sandboxSysctls are set inside every sandbox's namespace. Sandbox root
// lives in a user namespace, so without the first it could not bind port
// 80; the second lets any user ping without CAP_NET_RAW.
var sandboxSysctls = []struct{ path, value string }{
	{"/proc/sys/net/ipv4/ip_unprivileged_port_start", "0"},
	{"/proc/sys/net/ipv4/ping_group_range", "0 2147483647"},
}

// ensureNetnsDir makes /run/netns a shared mount point, as `ip netns add`
// does, so that namespace mounts made or removed later propagate to mount
// namespaces created in between (a removed mount left alive in another
// mount namespace would keep the network namespace alive).
func ensureNetnsDir() error {
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", netnsDir, err)
	}
	for bound := false; ; bound = true {
		err := unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if err == nil {
			return nil
		}
		// EINVAL: not a mount point yet; make it one by binding it onto itself.
		if !errors.Is(err, unix.EINVAL) || bound {
			return fmt.Errorf("make %s a shared mount: %w", netnsDir, err)
		}
		if err := unix.Mount(netnsDir, netnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s onto itself: %w", netnsDir, err)
		}
	}
}

// newNetns is what createNetns returns: an open descriptor of the namespace
// (to create links in it) and a netlink handle whose socket lives inside it
// (usable from any thread). close releases both, not the namespace.
type newNetns struct {
	fd int
	nl *netlink.Handle
}

func (n newNetns) close() {
	if n.nl != nil {
		n.nl.Close()
	}
	if n.fd >= 0 {
		unix.Close(n.fd)
	}
}

// createNetns creates a network namespace bind-mounted at path, with lo up
// and the sandbox sysctls set. On failure nothing is left behind.
//
// The namespace is made by a goroutine that locks its OS thread, unshares
// and never unlocks: the Go runtime then ends the thread with the
// goroutine, so no other goroutine can ever run on a thread left in the
// sandbox's namespace, whether or not restoring it would have worked.
// (netns.NewNamed unshares the caller's thread and leaves it there.)
func createNetns(path string) (n newNetns, err error) {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return newNetns{fd: -1}, fmt.Errorf("network namespace %s already exists: %w", path, errdefs.ErrConflict)
		}
		return newNetns{fd: -1}, fmt.Errorf("create %s: %w", path, err)
	}
	f.Close()

	type result struct {
		n       newNetns
		mounted bool
		err     error
	}
	done := make(chan result, 1)
	go func() {
		goruntime.LockOSThread() // never unlocked: see above
		n, mounted, err := enterNewNetns(path)
		done <- result{n, mounted, err}
	}()
	r := <-done
	if r.err != nil {
		r.n.close()
		if r.mounted {
			_ = unix.Unmount(path, unix.MNT_DETACH)
		}
		_ = os.Remove(path)
		return newNetns{fd: -1}, r.err
	}
	return r.n, nil
}

// enterNewNetns runs on a locked thread that is thrown away afterwards.
func enterNewNetns(path string) (n newNetns, mounted bool, err error) {
	n.fd = -1
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return n, false, fmt.Errorf("unshare network namespace: %w", err)
	}
	if err := unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, ""); err != nil {
		return n, false, fmt.Errorf("bind network namespace to %s: %w", path, err)
	}
	if err := setSandboxSysctls(); err != nil {
		return n, true, err
	}
	n.fd, err = unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return n, true, fmt.Errorf("open %s: %w", path, err)
	}
	// A netlink socket belongs to the namespace it was opened in.
	n.nl, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return n, true, fmt.Errorf("netlink in sandbox namespace: %w", err)
	}
	lo, err := n.nl.LinkByName("lo")
	if err != nil {
		return n, true, fmt.Errorf("find lo in sandbox namespace: %w", err)
	}
	if err := n.nl.LinkSetUp(lo); err != nil {
		return n, true, fmt.Errorf("bring lo up in sandbox namespace: %w", err)
	}
	return n, true, nil
}

// setSandboxSysctls sets sandboxSysctls in the calling thread's network
// namespace, through a procfs of its own: a new instance, never attached
// to any mount namespace, that goes with its descriptor. Through the
// host's /proc the path would walk the kernel's cached entries of
// /proc/sys/net/ipv4 of every network namespace that has used it, one
// per sandbox: with 1,000 sandboxes running the two writes took 1.0-1.2
// ms against 0.17 ms on an empty host; through a new procfs, 0.21 ms and
// 0.26 ms.
func setSandboxSysctls() error {
	fs, err := unix.Fsopen("proc", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("procfs for the sandbox's sysctls: %w", err)
	}
	defer unix.Close(fs)
	if err := unix.FsconfigCreate(fs); err != nil {
		return fmt.Errorf("procfs for the sandbox's sysctls: %w", err)
	}
	proc, err := unix.Fsmount(fs, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC)
	if err != nil {
		return fmt.Errorf("procfs for the sandbox's sysctls: %w", err)
	}
	defer unix.Close(proc)
	for _, s := range sandboxSysctls {
		// sys/net resolves to the namespace of the calling thread.
		if err := writeAt(proc, strings.TrimPrefix(s.path, "/proc/"), s.value); err != nil {
			return fmt.Errorf("set %s in sandbox namespace: %w", s.path, err)
		}
	}
	return nil
}

// writeAt writes value to the file at path under the directory dir.
func writeAt(dir int, path, value string) error {
	fd, err := unix.Openat(dir, path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	_, err = unix.Write(fd, []byte(value))
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	return err
}

// removeNetns unmounts and removes a namespace bind mount; a missing one is
// not an error. The namespace itself ends when its last process does.
func removeNetns(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil &&
		!errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}
