package microvm

import (
	"encoding/json"
	"fmt"
	"os"

	"roost.dev/roost/atomicfile"
)

// SaveState writes a driver's state record v to path as JSON, atomically:
// a reader (the next agent) finds the old record or the new one, whole.
func SaveState(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(path, b, 0o600); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}

// LoadState reads the state record at path into v, refusing one whose
// "version" is not version.
func LoadState(path string, version int, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var head struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return fmt.Errorf("parse state: %w", err)
	}
	if head.Version != version {
		return fmt.Errorf("state version %d, want %d", head.Version, version)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("parse state: %w", err)
	}
	return nil
}
