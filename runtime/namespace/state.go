package namespace

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"roost.dev/roost/atomicfile"
)

// stateVersion is bumped whenever record changes incompatibly; Recover
// refuses records of another version rather than misreading them.
const stateVersion = 1

// record is what the driver persists about one sandbox, in
// <StateDir>/namespace.json, to re-adopt it after the agent restarts.
type record struct {
	Version   int       `json:"version"`
	ID        string    `json:"id"`
	Pid       int       `json:"pid"`
	PidStart  uint64    `json:"pidStart"` // start time in clock ticks, to tell pid reuse apart
	Cgroup    string    `json:"cgroup"`
	EnvdAddr  string    `json:"envdAddr"`
	Started   time.Time `json:"started"`
	StateDir  string    `json:"stateDir"`
	LowerPath string    `json:"lowerPath"`
}

const recordFile = "namespace.json"

func (r record) save() error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(r.StateDir, recordFile), b, 0o600); err != nil {
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

// processStart returns a process's start time (field 22 of /proc/pid/stat).
func processStart(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces and parentheses; fields
	// after it start past the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	fields := strings.Fields(s[i+1:])
	if len(fields) < 20 {
		return 0, errors.New("malformed stat")
	}
	return strconv.ParseUint(fields[19], 10, 64)
}

// alive reports whether the recorded init still runs (and is the same process).
func (r record) alive() bool {
	start, err := processStart(r.Pid)
	return err == nil && start == r.PidStart
}
