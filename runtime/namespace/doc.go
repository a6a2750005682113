// Package namespace is the runtime driver that isolates a sandbox with Linux
// namespaces and cgroups, with no virtualization: it runs on any Linux host.
//
// A sandbox is an init process (cmd/roost-init, package sandboxinit: a small
// binary of its own, found next to the running executable) in new user, pid,
// mount, uts, ipc and cgroup namespaces, inside the network namespace the
// manager prepared. Root in the sandbox maps to an unprivileged host ID range
// (HostIDBase). Its root filesystem is an overlay: the template tree, seen
// through an idmapped mount so its root-owned files belong to the sandbox's
// root, under a per-sandbox upper layer on a size-limited ext4 image. The
// init mounts /proc, a minimal /dev and /sys, pivots into the overlay,
// starts envd from a file descriptor (envd is never copied into the tree)
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
// The driver does not create network namespaces or choose addresses (the
// network package does) and does not wait for envd (the manager does).
package namespace
