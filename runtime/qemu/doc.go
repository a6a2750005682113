// Package qemu is the runtime driver that runs each sandbox as a QEMU
// microVM (-M microvm, virtio-mmio disk and network): with KVM when
// /dev/kvm exists, else under software emulation (TCG). The guest boots
// Debian's kernel directly (PVH) with roost's initramfs and init (package
// guest), from a qcow2 overlay over the template's shared ext4 image
// (package vmimage).
//
// QEMU runs inside the sandbox's network namespace on a TAP device; the
// guest has the same address in every sandbox (microvm.GuestAddr), and nftables
// rules in the namespace map the sandbox's slot address to it, so a memory
// snapshot restores on any slot. The driver is the microvm.Shell around
// QEMU, which it controls over QMP; it does not prepare the namespace or
// the host firewall (package network does).
//
// QEMU never runs as host root: it starts as the sandbox's VMM uid
// (package microvm) with the files it needs (disk, template image,
// kernel, TAP device, QMP socket) opened by the agent and passed as
// descriptors, under its seccomp filter (-sandbox, no spawn, no
// privilege changes), in a cgroup bounding its memory, CPU and tasks.
// A QEMU without seccomp makes the runtime unavailable unless
// Config.NoSandbox says to run without it.
package qemu
