// Package firecracker is the runtime driver that runs each sandbox as a
// Firecracker microVM, on hosts with KVM: the microvm.Shell around
// Firecracker. It speaks Firecracker's HTTP API
// over the per-sandbox Unix socket itself (no SDK): logger, machine
// config, boot source, the root drive, the network interface with its
// egress rate limiter, MMDS, InstanceStart; PATCH /vm to pause and resume;
// snapshot create (full, or diff when dirty-page tracking is on) and load
// to hibernate and restore, and to capture a running sandbox and start
// forks of it (each on its own reflinked copies of the capture's files).
//
// The guest is the one the qemu driver boots (package guest as PID 1, the
// template's ext4 image from package vmimage), on a kernel the operator
// supplies: an uncompressed vmlinux with virtio-mmio, virtio-blk,
// virtio-net and ext4 built in (Firecracker's reference configuration
// does), optionally with an initramfs. A sandbox's disk is a reflinked
// copy of the template image, so the state directories must be on a
// filesystem with reflinks (XFS, btrfs); Probe says so when they are not.
//
// Firecracker runs jailed, as its jailer runs it (the jailer does it when
// it is next to firecracker, else the launcher): chrooted into a directory
// of its sandbox's files, as the sandbox's VMM uid and gid, in the VMM's
// cgroup (package microvm), in new pid and mount namespaces, inside the
// sandbox's network namespace, on the TAP device and NAT of package microvm, so a snapshot
// restores on any slot. Guests read their sandbox's identity and metadata
// from MMDS (version 2) at 169.254.169.254, under /roost.
package firecracker
