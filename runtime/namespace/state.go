package namespace

import (
	"net/netip"
	"path/filepath"
	"time"

	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/handles"
	"roost.dev/roost/runtime/proc"
)

// stateVersion is the version of record's layout in a
// runtime.DriverState; Recover refuses states of another version rather
// than misreading them. Version 1 is also the layout of the namespace.json
// the driver wrote before the agent kept its state.
const stateVersion = 1

// legacyState is the state file of a sandbox in its state directory,
// from before the agent kept the driver's state.
const legacyState = "namespace.json"

// record is what the driver saves of one sandbox (the driver state the
// agent keeps), to re-adopt it after the agent restarts.
type record struct {
	ID string `json:"id"`
	// Process is the sandbox's init.
	proc.Process
	Cgroup   string    `json:"cgroup"`
	EnvdAddr string    `json:"envdAddr"`
	Started  time.Time `json:"started"`
	StateDir string    `json:"stateDir"`
	// LowerPath is the idmapped template mount an older driver shared
	// between sandboxes; empty for a sandbox with an ID range of its own.
	LowerPath string `json:"lowerPath,omitempty"`
	// IDs is the sandbox's host ID range (see hostID); 0, the range all
	// sandboxes shared, in records of older drivers.
	IDs int `json:"ids,omitempty"`
	// Hibernation is set while the sandbox is hibernated: its processes
	// are in CRIU's images, and Process is zero.
	Hibernation *hibernation `json:"hibernation,omitempty"`
	// BootID is the boot id the sandbox reads in
	// /proc/sys/kernel/random/boot_id, new at each create and boot (not
	// at a restore, which goes on with the same boot); empty in records
	// of older drivers, whose sandboxes read the host's.
	BootID string `json:"bootId,omitempty"`
	// Halted is set while the sandbox is halted (runtime.Halter): its
	// processes ended, its disk image kept unmounted, and Process is zero.
	Halted bool `json:"halted,omitempty"`
	// Layers are the read-only disks under the sandbox's own, top first,
	// of a fork (see diskLayer); none for a sandbox that was created.
	Layers []diskLayer `json:"layers,omitempty"`
}

// loadRecord reads the saved state of spec's sandbox: st, or for a
// sandbox an older agent recorded, the driver's own state file.
func loadRecord(spec runtime.Spec, st runtime.DriverState) (record, error) {
	var r record
	err := handles.Decode(st, stateVersion, filepath.Join(spec.StateDir, legacyState), &r)
	return r, err
}

// instance is the sandbox as the runtime contract reports it, with the
// state the agent keeps.
func (r record) instance() (runtime.Instance, error) {
	st, err := handles.Encode(stateVersion, r)
	if err != nil {
		return runtime.Instance{}, err
	}
	addr, _ := netip.ParseAddrPort(r.EnvdAddr)
	return runtime.Instance{ID: r.ID, Envd: addr, Pid: r.Pid, Started: r.Started, State: st}, nil
}
