// Package vmimage is the guest image pipeline the VM drivers share: it
// turns a template tree into a read-only ext4 image holding envd and the
// guest init (cached per template, envd and init), extracts an
// uncompressed vmlinux from a distribution kernel for a direct (PVH) boot,
// and builds the small initramfs that loads the virtio and ext4 modules
// such a kernel has as modules.
//
// It does not run VMs, and it does not give sandboxes their own disks:
// drivers layer a copy-on-write disk over the image (QEMU: qcow2).
package vmimage
