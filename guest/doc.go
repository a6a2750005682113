// Package guest is the init (PID 1) of roost's virtual-machine sandboxes.
// It runs inside the guest kernel, first from the small initramfs the
// image pipeline builds (where it loads the virtio and ext4 modules and
// switches to the root disk) and then on the root disk: it mounts the
// kernel filesystems, configures eth0 from the kernel command line, sets
// the hostname and clock, starts envd, reaps orphans and powers the
// machine off when asked or when envd dies.
//
// It is not part of the host: it imports nothing of roost's host side and
// nothing beyond the standard library (eth0 is configured with a few
// rtnetlink requests of its own), and the drivers talk to it only through
// the kernel command line they build (see Config) and envd's port.
package guest
