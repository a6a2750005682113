// Package cgroup confines a sandbox's processes with Linux control groups:
// it creates a group per sandbox, sets its CPU, memory and pids limits,
// moves processes into it, freezes and thaws it, kills everything in it,
// reports its resource use, and removes it.
//
// It works on pure cgroup v2 hosts (controllers in the unified tree) and on
// v1 and hybrid hosts (v1 controllers memory, cpu, cpuacct, pids and
// freezer, each mounted under /sys/fs/cgroup). Detect chooses: v2 when
// /sys/fs/cgroup is cgroup2 and offers the memory, cpu and pids
// controllers, else v1 with whichever of those controllers are mounted. On
// a hybrid host the limits come from v1; when the hybrid v2 tree
// (/sys/fs/cgroup/unified) is writable, each group is mirrored there as
// well, so that Kill can use cgroup.kill, which kills a forking process
// tree atomically, and so that Freeze uses the v2 freezer (cgroup.freeze),
// which, unlike the v1 one, was never seen stuck FREEZING.
//
// Group names are slash-separated paths relative to each hierarchy's root,
// like "roost/<sandbox-id>"; the first element must start with "roost" so
// that everything this package creates can be found and cleaned up, and so
// that a wrong name can never reach a group roost does not own.
//
// Errors wrap the categories of roost.dev/roost/errdefs: ErrConflict (a
// group that already exists), ErrNotFound (a missing group), ErrInvalid
// (a bad name or limit), ErrUnsupported (a limit whose controller this
// host lacks) and ErrUnavailable (no usable cgroup hierarchy).
//
// It does not start processes, create cgroup namespaces, set cpusets, I/O
// or device limits, or decide what a sandbox's limits are; the runtime
// driver that owns the sandbox does. It holds no state besides the
// directories in cgroupfs: a restarted agent finds its groups with List
// and Load.
package cgroup
