package qemu

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// stateVersion is bumped whenever record changes incompatibly.
const stateVersion = 1

// record is what the driver persists about one sandbox, in
// <StateDir>/qemu.json, to re-adopt it after the agent restarts.
type record struct {
	Version  int       `json:"version"`
	ID       string    `json:"id"`
	Pid      int       `json:"pid"`      // 0 while hibernated (snapshot on disk, no process)
	PidStart uint64    `json:"pidStart"` // start time in clock ticks, to tell pid reuse apart
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

// procStat returns fields of /proc/pid/stat after the command name:
// index 0 is field 3 (state).
func procStat(pid int) ([]string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, fmt.Errorf("malformed stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return nil, fmt.Errorf("malformed stat")
	}
	return f, nil
}

func processStart(pid int) (uint64, error) {
	f, err := procStat(pid)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// alive reports whether the recorded QEMU still runs (and is the same
// process, not a zombie).
func (r record) alive() bool {
	if r.Pid <= 0 {
		return false
	}
	f, err := procStat(r.Pid)
	if err != nil || f[0] == "Z" {
		return false
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	return err == nil && start == r.PidStart
}
