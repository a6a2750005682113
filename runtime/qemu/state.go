package qemu

import (
	"path/filepath"
	"time"

	"roost.dev/roost/runtime/microvm"
)

// stateVersion is bumped whenever record changes incompatibly.
const stateVersion = 1

// record is what the driver persists about one sandbox, in
// <StateDir>/qemu.json, to re-adopt it after the agent restarts.
type record struct {
	Version int    `json:"version"`
	ID      string `json:"id"`
	// Process is QEMU's; zero while hibernated (snapshot on disk, no process).
	microvm.Process
	EnvdAddr string    `json:"envdAddr"`
	Started  time.Time `json:"started"`
	StateDir string    `json:"stateDir"`
	Netns    string    `json:"netns"`    // the network namespace QEMU runs in
	Args     []string  `json:"args"`     // QEMU's command line, reused by Restore
	Snapshot string    `json:"snapshot"` // memory snapshot file, when one exists
	MemoryMB int       `json:"memoryMB"`
}

const recordFile = "qemu.json"

func (r record) save() error {
	return microvm.SaveState(filepath.Join(r.StateDir, recordFile), r)
}

func loadRecord(stateDir string) (record, error) {
	var r record
	err := microvm.LoadState(filepath.Join(stateDir, recordFile), stateVersion, &r)
	return r, err
}
