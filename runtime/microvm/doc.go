// Package microvm holds what the VM drivers (qemu, firecracker) share on
// the host side. Its Shell is the driver around a VMM: the table of
// sandboxes, create (with its unwinding on failure), destroy, stats,
// pause and resume, snapshot and restore, capture and fork (a running VM
// copied into a directory that any number of new VMs start from),
// re-adoption after an agent restart, prune of stray VMM processes, and
// the VM's saved state (State, the runtime.DriverState the agent keeps);
// each driver supplies a VMM, which does those steps with its own API
// (QMP, Firecracker's HTTP API).
// Around them it sets up the guest's fixed network inside the sandbox's
// namespace (TAP device, NAT to the slot address, egress shaping) and
// writes the roost.* kernel command-line words the guest init reads
// (package guest). It confines each VMM: a host uid of its own per
// sandbox (claimed in a directory, so claims outlive the agent) and a
// cgroup "roost-vm/<id>" with the sandbox's limits plus the VMM's
// overhead; the driver starts the VMM as that uid with what it needs
// passed as descriptors.
//
// It does not speak any VMM's protocol, build images or kernels (package
// vmimage), or make the sandbox's network namespace (package network).
package microvm
