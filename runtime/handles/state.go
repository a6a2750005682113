package handles

import (
	"encoding/json"
	"fmt"
	"os"

	"roost.dev/roost/runtime"
)

// Encode saves v, a driver's state of one sandbox, as a DriverState of
// the driver's version of that state.
func Encode(version int, v any) (runtime.DriverState, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return runtime.DriverState{}, fmt.Errorf("encode driver state: %w", err)
	}
	return runtime.DriverState{Version: version, Data: b}, nil
}

// Decode reads st into v, refusing a state of another version than
// version. A zero st stands for a sandbox recorded by an older agent,
// when the driver kept its state itself: Decode then reads that state
// file, legacy, whose "version" field must be version.
func Decode(st runtime.DriverState, version int, legacy string, v any) error {
	if st.IsZero() {
		var err error
		if st, err = readLegacy(legacy); err != nil {
			return err
		}
	}
	if st.Version != version {
		return fmt.Errorf("driver state version %d, want %d", st.Version, version)
	}
	if err := json.Unmarshal(st.Data, v); err != nil {
		return fmt.Errorf("parse driver state: %w", err)
	}
	return nil
}

// readLegacy reads a state file a driver wrote before the agent kept its
// state: one JSON object, the state itself, with its version inside.
func readLegacy(path string) (runtime.DriverState, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return runtime.DriverState{}, fmt.Errorf("no driver state, and no state file: %w", err)
	}
	var head struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return runtime.DriverState{}, fmt.Errorf("parse state file %s: %w", path, err)
	}
	return runtime.DriverState{Version: head.Version, Data: b}, nil
}
