package agent

import (
	"fmt"

	"roost.dev/roost/errdefs"
)

// State is where a sandbox is in its life.
type State int

const (
	StateStarting State = iota + 1
	StateRunning
	StatePaused
	StateStopped
	StateError
)

var stateNames = map[State]string{
	StateStarting: "starting",
	StateRunning:  "running",
	StatePaused:   "paused",
	StateStopped:  "stopped",
	StateError:    "error",
}

func (s State) String() string {
	if n, ok := stateNames[s]; ok {
		return n
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// MarshalText writes the state's name, so records stay readable and survive
// a reordering of the constants.
func (s State) MarshalText() ([]byte, error) {
	n, ok := stateNames[s]
	if !ok {
		return nil, fmt.Errorf("unknown sandbox state %d", int(s))
	}
	return []byte(n), nil
}

// UnmarshalText parses a state's name.
func (s *State) UnmarshalText(b []byte) error {
	for st, n := range stateNames {
		if n == string(b) {
			*s = st
			return nil
		}
	}
	return fmt.Errorf("unknown sandbox state %q", b)
}

// transitions lists, for each state, the states a sandbox may go to.
// Stopped is final: a stopped sandbox is removed from the manager.
var transitions = map[State][]State{
	StateStarting: {StateRunning, StateError, StateStopped},
	StateRunning:  {StatePaused, StateStopped, StateError},
	StatePaused:   {StateRunning, StateStopped, StateError},
	StateError:    {StateStopped},
}

// checkTransition returns nil when a sandbox in state from may go to to,
// and an error wrapping errdefs.ErrConflict that says why not otherwise.
func checkTransition(from, to State) error {
	for _, s := range transitions[from] {
		if s == to {
			return nil
		}
	}
	if from == to {
		return fmt.Errorf("sandbox is already %s: %w", from, errdefs.ErrConflict)
	}
	return fmt.Errorf("sandbox is %s, cannot become %s: %w", from, to, errdefs.ErrConflict)
}
