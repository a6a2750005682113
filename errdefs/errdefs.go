package errdefs

import "errors"

// The categories. Wrap one with %w; test with errors.Is.
var (
	// ErrNotFound: the thing named does not exist (or is not the caller's).
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: a create named something that exists.
	ErrAlreadyExists = errors.New("already exists")
	// ErrConflict: the thing exists but its state forbids the request
	// (a paused sandbox's ports, a resume of a running one).
	ErrConflict = errors.New("conflict")
	// ErrInvalid: the request itself is malformed or out of range.
	ErrInvalid = errors.New("invalid argument")
	// ErrUnauthenticated: no credential, or one that is not valid.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrPermissionDenied: a valid credential that does not allow this.
	ErrPermissionDenied = errors.New("permission denied")
	// ErrExhausted: a limit on the caller was reached (a quota, a rate).
	ErrExhausted = errors.New("resource exhausted")
	// ErrUnsupported: roost, or this host's runtime, cannot do this.
	ErrUnsupported = errors.New("unsupported")
	// ErrUnavailable: roost cannot serve this now; it may later (no
	// capacity, a sandbox in transition).
	ErrUnavailable = errors.New("unavailable")
	// ErrUnreachable: an upstream (host agent, envd, a sandbox's server)
	// did not answer.
	ErrUnreachable = errors.New("unreachable")
	// ErrTimeout: an upstream did not answer in time.
	ErrTimeout = errors.New("timed out")
)
