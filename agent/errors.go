package agent

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	"roost.dev/roost/errdefs"
)

// Refinements of the runtime categories that the edge maps to more precise
// codes. Both still match their parent category with errors.Is.
var (
	// ErrExists: a sandbox with the requested ID already exists.
	ErrExists = fmt.Errorf("already exists: %w", errdefs.ErrConflict)
	// ErrCapacity: the host has no room for another sandbox.
	ErrCapacity = fmt.Errorf("host is full: %w", errdefs.ErrUnavailable)
	// ErrPaused: the sandbox is paused, so its ports do not answer.
	ErrPaused = fmt.Errorf("sandbox is paused: %w", errdefs.ErrConflict)
)

// connectCode is the one place error categories become Connect codes.
func connectCode(err error) connect.Code {
	var ce *connect.Error
	switch {
	case errors.As(err, &ce):
		return ce.Code()
	case errors.Is(err, ErrExists):
		return connect.CodeAlreadyExists
	case errors.Is(err, ErrCapacity):
		return connect.CodeResourceExhausted
	case errors.Is(err, errdefs.ErrNotFound):
		return connect.CodeNotFound
	case errors.Is(err, errdefs.ErrConflict):
		return connect.CodeFailedPrecondition
	case errors.Is(err, errdefs.ErrInvalid):
		return connect.CodeInvalidArgument
	case errors.Is(err, errdefs.ErrUnsupported):
		return connect.CodeUnimplemented
	case errors.Is(err, errdefs.ErrUnavailable):
		return connect.CodeUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return connect.CodeDeadlineExceeded
	case errors.Is(err, context.Canceled):
		return connect.CodeCanceled
	default:
		return connect.CodeInternal
	}
}

// connectError wraps err for a Connect handler; nil stays nil.
func connectError(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	return connect.NewError(connectCode(err), err)
}
