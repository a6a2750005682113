package microvm

import (
	"context"

	"roost.dev/roost/runtime"
)

// VMM is what one VM driver does its own way, through its VMM's API (QMP,
// Firecracker's HTTP API); the Shell does the rest. The Shell calls it
// for one sandbox at a time (the manager serialises calls per sandbox),
// with a Machine whose saved fields the VMM may change: the Shell saves
// them afterwards.
type VMM interface {
	// Validate checks what this VMM needs of a spec beyond what every VM
	// needs (runtime.Spec.Validate and an IPv4 network).
	Validate(spec runtime.Spec) error
	// Prepare readies a new VM before its guest network and its VMM:
	// the guest kernel, the sandbox's disk in m.StateDir, the VMM's own
	// fields of m. The Shell removes Files when a later step fails.
	Prepare(ctx context.Context, m *Machine, spec runtime.Spec, lim runtime.Limits) error
	// Boot starts the VMM (Machine.Start) and boots the guest; it returns
	// once the guest runs. The Shell kills the VMM when Boot fails.
	Boot(ctx context.Context, m *Machine, spec runtime.Spec, lim runtime.Limits) error
	// Attach checks that the VMM of a VM re-adopted after an agent
	// restart answers on its control socket, and returns the VM's run
	// state, for the log.
	Attach(ctx context.Context, m *Machine) (string, error)
	// Pause stops the vCPUs of a running VM; its memory stays.
	Pause(ctx context.Context, m *Machine) error
	// Resume undoes Pause.
	Resume(ctx context.Context, m *Machine) error
	// Snapshot writes a running VM's state into m.StateDir and sets
	// m.Snapshot (and m.Memory, where the memory is a file of its own).
	// It leaves the VMM for the Shell to Stop; on failure the VM goes on
	// as before.
	Snapshot(ctx context.Context, m *Machine) error
	// Restore starts a new VMM (Machine.Start) from m's snapshot and
	// resumes the guest, then removes the snapshot files the VM no longer
	// needs and clears their fields. The Shell kills the VMM when Restore
	// fails.
	Restore(ctx context.Context, m *Machine) error
	// Capture writes a running VM's memory and device state, and a copy
	// of its disk, into dir (which exists, empty), and lets the VM run on
	// as before, on failure too.
	Capture(ctx context.Context, m *Machine, dir string) error
	// PrepareFork readies a new VM, m, to start from the capture in dir
	// of the VM src, as Prepare readies one to boot: the sandbox's disk
	// from the capture's, the VMM's own fields of m, and m.Snapshot (and
	// m.Memory) naming the capture's state for Restore. Restore removes
	// only the snapshot files inside m.StateDir.
	PrepareFork(ctx context.Context, m *Machine, spec runtime.Spec, src State, dir string) error
	// ExportDisk writes a copy of the VM's disk in stateDir, as a raw
	// filesystem image, to dst; the VM is not writing it.
	ExportDisk(ctx context.Context, stateDir, dst string) error
	// Stop ends the VMM: gracefully where it can within ctx, else killed.
	Stop(ctx context.Context, m *Machine)
	// Files are the VM's files in stateDir that Destroy removes.
	Files(stateDir string) []string
	// Disk is the VM's disk image in stateDir, whose blocks on the host
	// Stats reports as the disk's use.
	Disk(stateDir string) string
}
