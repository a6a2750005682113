package agent

import (
	"errors"
	"fmt"
	"testing"

	"connectrpc.com/connect"

	"roost.dev/roost/errdefs"
)

// The agent's own errors reach its Connect clients with these codes.
func TestConnectCodes(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("create sandbox x: step: %w", err) }
	for _, tc := range []struct {
		err  error
		want connect.Code
	}{
		{wrap(ErrExists), connect.CodeAlreadyExists},
		{wrap(checkTransition(StatePaused, StatePaused)), connect.CodeFailedPrecondition},
		{wrap(ErrPaused), connect.CodeFailedPrecondition},
		{wrap(ErrCapacity), connect.CodeUnavailable},
		{fmt.Errorf("acquire network slot: %w: %w", ErrCapacity, errors.New("no free slot")), connect.CodeUnavailable},
	} {
		if got := errdefs.ConnectCode(tc.err); got != tc.want {
			t.Errorf("ConnectCode(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
	// The refinements still match their category.
	if !errors.Is(ErrExists, errdefs.ErrAlreadyExists) || !errors.Is(ErrPaused, errdefs.ErrConflict) || !errors.Is(ErrCapacity, errdefs.ErrUnavailable) {
		t.Error("a refinement lost its category")
	}
}
