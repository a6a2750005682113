package agent

import (
	"fmt"

	"roost.dev/roost/errdefs"
)

// Refinements of the error categories that callers test for by name. Each
// still matches its category with errors.Is, and the edge (errdefs) maps
// it by that category: the agent's Connect handlers answer with
// errdefs.ToConnect.
var (
	// ErrExists: a sandbox with the requested ID already exists.
	ErrExists = fmt.Errorf("sandbox exists: %w", errdefs.ErrAlreadyExists)
	// ErrCapacity: the host has no room for another sandbox.
	ErrCapacity = fmt.Errorf("host is full: %w", errdefs.ErrUnavailable)
	// ErrPaused: the sandbox is paused, so its ports do not answer.
	ErrPaused = fmt.Errorf("sandbox is paused: %w", errdefs.ErrConflict)
)
