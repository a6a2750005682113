package agent

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"connectrpc.com/connect"

	"roost.dev/roost/errdefs"
)

func TestConnectCode(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("create sandbox x: step: %w", err) }
	for _, tc := range []struct {
		err  error
		want connect.Code
	}{
		{wrap(errdefs.ErrNotFound), connect.CodeNotFound},
		{wrap(ErrExists), connect.CodeAlreadyExists},
		{wrap(errdefs.ErrConflict), connect.CodeFailedPrecondition},
		{wrap(checkTransition(StatePaused, StatePaused)), connect.CodeFailedPrecondition},
		{wrap(ErrPaused), connect.CodeFailedPrecondition},
		{wrap(errdefs.ErrInvalid), connect.CodeInvalidArgument},
		{wrap(errdefs.ErrUnsupported), connect.CodeUnimplemented},
		{wrap(ErrCapacity), connect.CodeResourceExhausted},
		{fmt.Errorf("acquire network slot: %w: %w", ErrCapacity, errdefs.ErrUnavailable), connect.CodeResourceExhausted},
		{wrap(errdefs.ErrUnavailable), connect.CodeUnavailable},
		{wrap(context.DeadlineExceeded), connect.CodeDeadlineExceeded},
		{wrap(context.Canceled), connect.CodeCanceled},
		{errors.New("disk on fire"), connect.CodeInternal},
		{wrap(connect.NewError(connect.CodePermissionDenied, errors.New("no"))), connect.CodePermissionDenied},
	} {
		if got := connectCode(tc.err); got != tc.want {
			t.Errorf("connectCode(%v) = %s, want %s", tc.err, got, tc.want)
		}
		ce := new(connect.Error)
		if !errors.As(connectError(tc.err), &ce) || ce.Code() != tc.want {
			t.Errorf("connectError(%v) = %v, want code %s", tc.err, connectError(tc.err), tc.want)
		}
	}
	if connectError(nil) != nil {
		t.Error("connectError(nil) != nil")
	}
	// The refinements still match their parent category.
	if !errors.Is(ErrExists, errdefs.ErrConflict) || !errors.Is(ErrPaused, errdefs.ErrConflict) || !errors.Is(ErrCapacity, errdefs.ErrUnavailable) {
		t.Error("a refinement lost its category")
	}
}
