// Package microvm holds what the VM drivers (qemu, firecracker) share on
// the host side: the guest's fixed network inside the sandbox's namespace
// (TAP device, NAT to the slot address, egress shaping), the roost.*
// kernel command-line words the guest init reads (package guest), and
// watching a VMM process that outlives the agent.
package microvm
