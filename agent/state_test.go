package agent

import (
	"errors"
	"strings"
	"testing"

	"roost.dev/roost/errdefs"
)

var allStates = []State{StateStarting, StateRunning, StatePaused, StateStopped, StateError}

func TestStateMachine(t *testing.T) {
	// The whole table: every pair not listed is illegal.
	legal := map[[2]State]bool{
		{StateStarting, StateRunning}: true,
		{StateStarting, StateError}:   true,
		{StateStarting, StateStopped}: true,
		{StateRunning, StatePaused}:   true,
		{StateRunning, StateStopped}:  true,
		{StateRunning, StateError}:    true,
		{StatePaused, StateRunning}:   true,
		{StatePaused, StateStopped}:   true,
		{StatePaused, StateError}:     true,
		{StateError, StateStopped}:    true,
	}
	for _, from := range allStates {
		for _, to := range allStates {
			err := checkTransition(from, to)
			if want := legal[[2]State{from, to}]; (err == nil) != want {
				t.Errorf("%s → %s: err = %v, want legal=%v", from, to, err, want)
			}
			if err != nil && !errors.Is(err, errdefs.ErrConflict) {
				t.Errorf("%s → %s: %v does not wrap ErrConflict", from, to, err)
			}
		}
	}
}

func TestStateMessages(t *testing.T) {
	for _, tc := range []struct {
		from, to State
		want     string
	}{
		{StatePaused, StatePaused, "already paused"},
		{StateRunning, StateRunning, "already running"},
		{StateStopped, StatePaused, "sandbox is stopped, cannot become paused"},
		{StateError, StateRunning, "sandbox is error, cannot become running"},
	} {
		if err := checkTransition(tc.from, tc.to); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s → %s: %v, want it to say %q", tc.from, tc.to, err, tc.want)
		}
	}
}

func TestStateText(t *testing.T) {
	for _, s := range allStates {
		b, err := s.MarshalText()
		if err != nil {
			t.Fatalf("%d: %v", s, err)
		}
		var back State
		if err := back.UnmarshalText(b); err != nil || back != s {
			t.Errorf("%s: round trip gave %s, %v", s, back, err)
		}
	}
	if _, err := State(0).MarshalText(); err == nil {
		t.Error("state 0 marshalled")
	}
	var s State
	if err := s.UnmarshalText([]byte("sleeping")); err == nil {
		t.Error(`"sleeping" parsed`)
	}
}
