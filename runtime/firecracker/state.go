package firecracker

import (
	"path/filepath"
	"time"

	"roost.dev/roost/runtime/microvm"
)

// stateVersion is bumped whenever record changes incompatibly.
const stateVersion = 1

// record is what the driver persists about one sandbox, in
// <StateDir>/firecracker.json, to re-adopt or restore it after the agent
// restarts.
type record struct {
	Version int    `json:"version"`
	ID      string `json:"id"`
	// Process is Firecracker's; zero while hibernated.
	microvm.Process
	EnvdAddr string    `json:"envdAddr"`
	Started  time.Time `json:"started"`
	StateDir string    `json:"stateDir"`
	Netns    string    `json:"netns"`
	MemoryMB int       `json:"memoryMB"`
	// Snapshot is the VM state file of a hibernated sandbox; Memory its
	// guest memory, which stays after a restore when diff snapshots are
	// on (the base the next diff is merged into).
	Snapshot string `json:"snapshot,omitempty"`
	Memory   string `json:"memory,omitempty"`
}

const recordFile = "firecracker.json"

func (r record) save() error {
	return microvm.SaveState(filepath.Join(r.StateDir, recordFile), r)
}

func loadRecord(stateDir string) (record, error) {
	var r record
	err := microvm.LoadState(filepath.Join(stateDir, recordFile), stateVersion, &r)
	return r, err
}

// statePaths are the files of one sandbox under its state directory.
type statePaths struct {
	disk, api, console, log, vmstate, memory, memoryDiff string
}

func paths(stateDir string) statePaths {
	j := func(name string) string { return filepath.Join(stateDir, name) }
	return statePaths{
		disk:       j("rootfs.ext4"),
		api:        j("api.sock"),
		console:    j("init.log"), // the guest's serial console (Firecracker's stdout)
		log:        j("firecracker.log"),
		vmstate:    j("vm.snap"),
		memory:     j("memory.snap"),
		memoryDiff: j("memory.diff"),
	}
}

// files are what Destroy removes (the manager removes the directory).
func (p statePaths) files() []string {
	return []string{p.disk, p.api, p.vmstate, p.memory, p.memoryDiff}
}
