package filesystem

import (
	"context"
	"errors"
	"io/fs"
	"syscall"

	"connectrpc.com/connect"

	"roost.dev/roost/envd/identity"
)

// Error categories raised by this package; connectError maps them, and the
// operating system's errors, to Connect codes.
var (
	// errNotDir: a directory was needed and something else is there.
	errNotDir = errors.New("not a directory")
	// errDirExists: MakeDir found the directory already present.
	errDirExists = errors.New("directory already exists")
	// errBadRequest: a request that can never succeed as phrased.
	errBadRequest = errors.New("invalid request")
	// errUnknownWatcher: no watcher has the given id.
	errUnknownWatcher = errors.New("unknown watcher")
	// errOverflow: events arrived faster than the client took them.
	errOverflow = errors.New("event buffer full: client is not keeping up")
	// errWatchedGone: the watched directory itself was removed or renamed.
	errWatchedGone = errors.New("watched directory was removed or renamed")
	// errClosed: the service is shutting down.
	errClosed = errors.New("filesystem service closed")
)

// connectError is the single place where errors become Connect errors.
// Errors that already carry a Connect code (from auth) pass through.
func connectError(err error) error {
	if err == nil {
		return nil
	}
	if ce := new(connect.Error); errors.As(err, &ce) {
		return err
	}
	return connect.NewError(codeOf(err), err)
}

func codeOf(err error) connect.Code {
	switch {
	case errors.Is(err, context.Canceled):
		return connect.CodeCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return connect.CodeDeadlineExceeded
	case errors.Is(err, identity.ErrBadPath),
		errors.Is(err, errBadRequest),
		errors.Is(err, errNotDir),
		errors.Is(err, syscall.ENOTDIR),
		errors.Is(err, syscall.EISDIR),
		errors.Is(err, syscall.EINVAL),
		errors.Is(err, syscall.ENAMETOOLONG):
		return connect.CodeInvalidArgument
	case errors.Is(err, fs.ErrNotExist),
		errors.Is(err, errUnknownWatcher),
		errors.Is(err, errWatchedGone):
		return connect.CodeNotFound
	case errors.Is(err, errDirExists),
		errors.Is(err, fs.ErrExist): // EEXIST and ENOTEMPTY
		return connect.CodeAlreadyExists
	case errors.Is(err, fs.ErrPermission): // EACCES and EPERM
		return connect.CodePermissionDenied
	case errors.Is(err, errOverflow),
		errors.Is(err, syscall.ENOSPC),
		errors.Is(err, syscall.EDQUOT),
		errors.Is(err, syscall.EMFILE):
		return connect.CodeResourceExhausted
	case errors.Is(err, syscall.ELOOP), // E2B: cyclic symlink is failed_precondition
		errors.Is(err, syscall.EXDEV),
		errors.Is(err, syscall.EROFS),
		errors.Is(err, syscall.EBUSY):
		return connect.CodeFailedPrecondition
	case errors.Is(err, errClosed):
		return connect.CodeUnavailable
	default:
		return connect.CodeInternal
	}
}
