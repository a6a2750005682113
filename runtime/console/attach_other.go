//go:build !linux

package console

import (
	"fmt"
	"log/slog"

	"roost.dev/roost/errdefs"
)

// Attach needs Linux's /proc.
func Attach(log *slog.Logger, path string, pid int, fds ...int) error {
	return fmt.Errorf("attach console: %w", errdefs.ErrUnsupported)
}
