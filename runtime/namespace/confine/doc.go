// Package confine is the confinement of namespace sandboxes beyond their
// namespaces: the seccomp filter every process in a sandbox runs under and
// the capabilities the sandbox keeps. It decides the policy and compiles it
// on the host; the sandbox init (package sandboxinit) installs what it is
// given, so that the init stays a small program of the standard library.
//
// The policy is Docker's default, taken as data from Docker's own profile
// (github.com/moby/profiles/seccomp) and resolved for Docker's default
// capability set, which is also the set a sandbox keeps (Capabilities):
//   - an allow list; anything else fails with EPERM, never a kill, so tools
//     report an error and go on;
//   - no new namespaces of any kind: unshare and setns are denied, clone
//     only without CLONE_NEW* flags, and clone3 answers ENOSYS so that libc
//     falls back to clone, whose flags a filter can see;
//   - no mount API (mount, umount2, pivot_root, fsopen, fsmount, fsconfig,
//     move_mount, open_tree, mount_setattr), no keyrings (keyctl, add_key,
//     request_key), bpf, perf_event_open, io_uring, kernel modules, kexec,
//     open_by_handle_at, userfaultfd, swap, reboot, acct, quotactl, clock
//     setters, syslog, and personality beyond the values Docker allows;
//   - ptrace is allowed, as Docker allows it on kernels from 4.8 on: it can
//     only reach processes of the same sandbox (its own pid namespace) with
//     no more capabilities than the tracer;
//   - only the host's native ABI: a system call of a foreign architecture
//     (i386 through int 0x80 on x86-64, 32-bit arm on arm64) fails with EPERM
//     and one of the x32 ABI with ENOSYS. Docker's profile allows the 32-bit
//     ABIs; roost does not run 32-bit programs in sandboxes.
//
// adjtimex and clock_adjtime stay allowed, as in Docker: they also read the
// clock's state, and the kernel lets them set it only with CAP_SYS_TIME in
// the host's user namespace, which no sandbox has.
//
// This package does not install anything and does not start sandboxes.
package confine
