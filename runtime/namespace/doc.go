// Package namespace is the runtime driver that isolates a sandbox with Linux
// namespaces and cgroups, with no virtualization: it runs on any Linux host.
//
// A sandbox is an init process (cmd/roost-init, package sandboxinit: a small
// binary of its own, found next to the running executable) in new user, pid,
// mount, uts, ipc and cgroup namespaces, inside the network namespace the
// manager prepared. Root in the sandbox maps to an unprivileged host ID range
// of its own (above HostIDBase, claimed in the data directory so that it
// survives agent restarts), so no two sandboxes share a host uid. Its root
// filesystem is an overlay (nodev): the template tree, seen through an
// idmapped mount of the sandbox's own so its root-owned files belong to the
// sandbox's root, under a per-sandbox upper layer on a size-limited ext4
// image, in a state directory host users cannot enter. The driver mounts a
// sysfs of the sandbox's network namespace and the procfs of its pid
// namespace below the root from the host's mount namespace, with Docker's
// masked and read-only paths, so that they reach the sandbox locked (see
// boundary_linux.go), and unmounts the host's copies once the sandbox
// holds its own: a running sandbox leaves two mounts in the host's
// namespace (its disk and root; the network package adds its netns). The
// init starts from a small mount namespace of its own, holding the
// sandbox's root tree and what the init needs before its pivot, not from
// the host's: a new mount namespace copies all of its creator's mounts,
// so a start would cost more with every sandbox running
// (spawnns_linux.go). For the same reason the init is cloned sharing the
// agent's memory until it executes (vfork), not with a copy of the
// agent's page tables, which grow with the sandboxes it runs: it executes
// unmapped in its new user namespace, its capabilities there carried as
// ambient ones, and becomes the sandbox's root once the driver has
// written its ID maps (sandboxinit.IDsMapped). It is born in its cgroup
// (cgroup.Group.JoinThread), not moved into it afterwards: a move holds
// the host's cgroup lock through an RCU grace period. The init mounts a minimal /dev, the sandbox's own
// cgroups, pivots into the overlay, starts envd from a file descriptor (envd is never copied into the tree)
// on a listening socket it opened first (so that a health check made while
// envd starts waits instead of failing), restarts envd if it dies, and
// reaps orphans. CPU, memory and pids limits and pause/resume come from
// the cgroup package.
//
// Before it starts envd, the init installs the syscall filter and drops
// the capabilities that package confine decides (Docker's default seccomp
// profile and capability set), so envd and everything in the sandbox,
// root and setuid programs included, run under both.
//
// Hibernation (Snapshot, Restore; hibernate_linux.go) writes a sandbox's
// processes and memory to disk with CRIU (Config.CRIU; scripts/criu.sh
// installs one that works on new kernels) and frees its memory, cgroup
// and mounts; a restore mounts its root again and has CRIU bring the
// processes back in the network namespace the manager gives. What CRIU
// cannot dump (an MPTCP socket, a file from the host the driver did not
// give the sandbox, a volume's bind mount) is refused with
// errdefs.ErrUnsupported, the sandbox left as it was. CRIU rebuilds the
// mount namespace inside the sandbox's user namespace, where nothing it
// mounts is locked: after it, the driver replaces /proc and /sys with
// trees it propagates from the host's namespace, locked as a created
// sandbox's are (relock_linux.go).
//
// Fork (Capture, Fork; fork_linux.go) is hibernation into new sandboxes:
// the capture is CRIU's dump of a sandbox that runs on (--leave-running)
// and one copy of its disk, both taken while it is frozen. A fork restores
// the dump with its own host ID range (CRIU's user namespace image is
// rewritten, criuimage.go), cgroup, network namespace and boot id, over an
// empty disk of its own: the captured disk is a read-only layer between it
// and the template, linked, not copied, and idmapped from the source's
// range to the fork's (layers_linux.go).
//
// A move (Export, Import; move_linux.go) is a fork of a hibernated
// sandbox on another host: the export is a capture's layout of its
// hibernation (links, no copy) with the executables its processes held,
// and the import keeps its ID and boot id and stays hibernated; Restore
// then lends its former address to its new network while CRIU runs.
//
// Halting (Halt, Boot; halt_linux.go: E2B's filesystem-only pause)
// frees what hibernation frees without writing the processes down: only
// the disk image stays, and Boot starts the sandbox from it as Create
// does. Each create and boot gives the sandbox a boot id of its own,
// bound read-only over /proc/sys/kernel/random/boot_id as the masks are
// (a restore keeps it: the same boot goes on).
//
// The driver does not create network namespaces or choose addresses (the
// network package does) and does not wait for envd (the manager does).
package namespace
