package qemu

import (
	"encoding/json"
	"fmt"
	"os"
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
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(r.StateDir, recordFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}

func loadRecord(stateDir string) (record, error) {
	b, err := os.ReadFile(filepath.Join(stateDir, recordFile))
	if err != nil {
		return record{}, err
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return record{}, fmt.Errorf("parse state: %w", err)
	}
	if r.Version != stateVersion {
		return record{}, fmt.Errorf("state version %d, want %d", r.Version, stateVersion)
	}
	return r, nil
}
