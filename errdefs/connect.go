package errdefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"connectrpc.com/connect"
)

// ConnectCode is the Connect code of err's category. A *connect.Error keeps
// its own code.
func ConnectCode(err error) connect.Code {
	var ce *connect.Error
	switch {
	case errors.As(err, &ce):
		return ce.Code()
	case errors.Is(err, ErrNotFound):
		return connect.CodeNotFound
	case errors.Is(err, ErrAlreadyExists):
		return connect.CodeAlreadyExists
	case errors.Is(err, ErrConflict):
		return connect.CodeFailedPrecondition
	case errors.Is(err, ErrInvalid):
		return connect.CodeInvalidArgument
	case errors.Is(err, ErrUnauthenticated):
		return connect.CodeUnauthenticated
	case errors.Is(err, ErrPermissionDenied):
		return connect.CodePermissionDenied
	case errors.Is(err, ErrExhausted):
		return connect.CodeResourceExhausted
	case errors.Is(err, ErrUnsupported):
		return connect.CodeUnimplemented
	case errors.Is(err, ErrUnavailable), errors.Is(err, ErrUnreachable):
		return connect.CodeUnavailable
	case errors.Is(err, ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return connect.CodeDeadlineExceeded
	case errors.Is(err, context.Canceled):
		return connect.CodeCanceled
	default:
		return connect.CodeInternal
	}
}

// ToConnect wraps err for a Connect handler with its category's code; nil
// stays nil and a *connect.Error passes through.
func ToConnect(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	return connect.NewError(ConnectCode(err), err)
}

// FromConnect turns a Connect call's error back into a category, prefixed
// with op: the peer's code when it answered, ErrUnreachable when the call
// never got an answer. nil stays nil.
func FromConnect(op string, err error) error {
	if err == nil {
		return nil
	}
	if cat := category(err); cat != nil {
		return fmt.Errorf("%s: %w: %w", op, cat, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

func category(err error) error {
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) {
		return ErrUnreachable // the connection failed: no answer
	}
	switch connect.CodeOf(err) {
	case connect.CodeNotFound:
		return ErrNotFound
	case connect.CodeAlreadyExists:
		return ErrAlreadyExists
	case connect.CodeFailedPrecondition, connect.CodeAborted:
		return ErrConflict
	case connect.CodeInvalidArgument, connect.CodeOutOfRange:
		return ErrInvalid
	case connect.CodeUnauthenticated:
		return ErrUnauthenticated
	case connect.CodePermissionDenied:
		return ErrPermissionDenied
	case connect.CodeResourceExhausted:
		return ErrExhausted
	case connect.CodeUnimplemented:
		return ErrUnsupported
	case connect.CodeUnavailable, connect.CodeCanceled:
		return ErrUnavailable
	case connect.CodeDeadlineExceeded:
		return ErrTimeout
	}
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return ErrUnreachable // not an answer of the peer's at all
	}
	return nil
}
