package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"roost.dev/roost/atomicfile"
	"roost.dev/roost/runtime"
)

// recordVersion is bumped whenever record changes. An agent reads the
// records of versions oldestRecord to recordVersion, writes only
// recordVersion, and leaves records of other versions alone rather than
// misread them. Version 1 has no driver state: the runtime drivers kept
// their own then, in files in the sandbox's state directory, and read
// them still when given none. Version 2 has no tree and no build marker:
// its sandboxes run on the tree their template names, for users. Version
// 3 has no pooled sandboxes: each is named by its ID where version 4's
// may be named by its spec's (record.key), so that an agent of version 3
// would remove a claimed pool sandbox as a stray.
const (
	recordVersion = 4
	oldestRecord  = 1
)

// recordFile is the name of a sandbox's record inside its state directory.
const recordFile = "sandbox.json"

// errRecordVersion marks a record written by an agent of another version.
var errRecordVersion = errors.New("unsupported sandbox record version")

// record is everything the agent knows about one sandbox, persisted so a
// restarted agent can re-adopt it.
type record struct {
	Version int    `json:"version"`
	ID      string `json:"id"`
	// Template names the template as the create did (for a template of
	// the control plane, its name there).
	Template string `json:"template"`
	// Tree is the template store's tree the sandbox runs on, when its
	// name is not Template (a control-plane template's "m-…" tree).
	Tree string `json:"tree,omitempty"`
	// Build marks an internal sandbox: a build step's, or the one a
	// template's capture is made of (kept in <data>/builds/sandboxes).
	Build bool `json:"build,omitempty"`
	// Pooled marks a sandbox of a warm pool that no create has claimed
	// yet (pool.go): it has no identity, and no one sees it.
	Pooled bool   `json:"pooled,omitempty"`
	State  State  `json:"state"`
	Error  string `json:"error,omitempty"`
	// Slot is the network slot the sandbox holds.
	Slot int `json:"slot"`
	// Spec is what the runtime was given; Recover needs it again.
	Spec runtime.Spec `json:"spec"`
	// Driver is the runtime's state of the sandbox, the last one it
	// returned, for Recover and Restore.
	Driver    runtime.DriverState `json:"driver,omitzero"`
	Metadata  map[string]string   `json:"metadata,omitempty"`
	Internet  bool                `json:"internet"`
	AutoPause bool                `json:"autoPause,omitempty"`
	// AutoPauseFilesystem: the pause on timeout halts (keeps only files).
	AutoPauseFilesystem bool `json:"autoPauseFilesystem,omitempty"`
	// Hibernated: paused with its state on disk and no process (the
	// runtime's Snapshot); Resume restores it, Recover leaves it be.
	Hibernated bool `json:"hibernated,omitempty"`
	// Halted: paused without its memory, its processes ended and its disk
	// kept (the runtime's Halt); Resume boots it afresh.
	Halted bool `json:"halted,omitempty"`
	// PauseNote says why a sandbox E2B's pause was to hibernate is frozen
	// instead (PauseToDisk); cleared when it resumes.
	PauseNote string `json:"pauseNote,omitempty"`
	// MovedOut is when the sandbox's export to another host was sent
	// (move.go): until the move is cancelled, or moveHold has passed, it
	// does not resume here.
	MovedOut time.Time `json:"movedOut,omitzero"`
	// EnvVars are the sandbox's own env vars as created, which a sandbox
	// booted afresh gets again (and a snapshot of it keeps).
	EnvVars      map[string]string `json:"envVars,omitempty"`
	EnvdToken    string            `json:"envdToken,omitempty"`
	Envd         netip.AddrPort    `json:"envd"`
	Pid          int               `json:"pid,omitempty"`
	TimeoutSecs  int64             `json:"timeoutSeconds"`
	Started      time.Time         `json:"started"`
	EndAt        time.Time         `json:"endAt"`
	StateChanged time.Time         `json:"stateChanged"`
	// Owner is the create's opaque label (CreateRequest.Owner).
	Owner string `json:"owner,omitempty"`
}

// key is the name the runtime and the network know the sandbox by: its
// ID, or, for a sandbox claimed from a warm pool (pool.go), the ID it
// was started under before it had one of its own.
func (r record) key() string {
	if r.Spec.ID != "" {
		return r.Spec.ID
	}
	return r.ID
}

func (r record) timeout() time.Duration { return time.Duration(r.TimeoutSecs) * time.Second }

// clone returns a copy that shares no maps or buffers with r.
func (r record) clone() record {
	r.Metadata = maps.Clone(r.Metadata)
	r.EnvVars = maps.Clone(r.EnvVars)
	r.Spec.Env = maps.Clone(r.Spec.Env)
	r.Driver.Data = bytes.Clone(r.Driver.Data)
	return r
}

// writeRecord stores rec in dir atomically: a reader (or a crash) sees the
// old record or the new one, never a mix.
func writeRecord(dir string, rec record) error {
	return storeRecord(dir, rec, atomicfile.Write)
}

// replaceRecord is writeRecord without the syncs, for the record of a
// sandbox that runs, and ran before: a crash of the host ends its
// processes, and the next agent removes it whichever record it finds.
func replaceRecord(dir string, rec record) error {
	return storeRecord(dir, rec, atomicfile.Replace)
}

func storeRecord(dir string, rec record, write func(string, []byte, os.FileMode) error) error {
	rec.Version = recordVersion
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return fmt.Errorf("encode sandbox record: %w", err)
	}
	if err := write(filepath.Join(dir, recordFile), b, 0o600); err != nil {
		return fmt.Errorf("write sandbox record: %w", err)
	}
	return nil
}

// recordHeader is the part of a record every version keeps, so an agent
// can keep its hands off a sandbox whose record it cannot read.
type recordHeader struct {
	Version int    `json:"version"`
	ID      string `json:"id"`
	Slot    *int   `json:"slot"`
}

// readRecord loads dir's record. A record of a version this agent does
// not read returns its header and an error wrapping errRecordVersion; a
// missing record wraps fs.ErrNotExist.
func readRecord(dir string) (record, recordHeader, error) {
	b, err := os.ReadFile(filepath.Join(dir, recordFile))
	if err != nil {
		return record{}, recordHeader{}, fmt.Errorf("read sandbox record: %w", err)
	}
	var h recordHeader
	if err := json.Unmarshal(b, &h); err != nil {
		return record{}, recordHeader{}, fmt.Errorf("parse sandbox record: %w", err)
	}
	if h.Version < oldestRecord || h.Version > recordVersion {
		return record{}, h, fmt.Errorf("%w %d (this agent reads %d to %d)", errRecordVersion, h.Version, oldestRecord, recordVersion)
	}
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		return record{}, h, fmt.Errorf("parse sandbox record: %w", err)
	}
	if rec.ID == "" || rec.Slot < 0 || rec.State == 0 {
		return record{}, h, errors.New("parse sandbox record: missing id, slot or state")
	}
	return rec, h, nil
}

// SandboxesUsing lists the sandboxes recorded under dataDir that were made
// from template name, so that tools can refuse to remove a template whose
// tree running sandboxes still read. It reads records only; no agent needs
// to run.
func SandboxesUsing(dataDir, name string) ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(dataDir, "sandboxes"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range ents {
		rec, _, err := readRecord(filepath.Join(dataDir, "sandboxes", e.Name()))
		if err == nil && (rec.Template == name || rec.Tree == name) {
			ids = append(ids, rec.ID)
		}
	}
	return ids, nil
}
