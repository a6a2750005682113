// Package runtime defines the contract between the host agent's sandbox
// manager and the drivers that isolate sandboxes (namespace, qemu,
// firecracker): the Runtime interface, the optional abilities a driver may
// have (Pauser, Snapshotter, Forker, Mover, Halter), and the value types that cross the boundary,
// among them DriverState: a driver's saved state of a sandbox, which the
// manager keeps in its own record and hands back when it recovers.
//
// It holds no implementation. Drivers live in subpackages and never import
// the manager or the control plane; the manager never imports a driver
// except where it is wired (cmd/roost).
package runtime
