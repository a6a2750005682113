package template

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// lockPoll is how often a waiter retries a held lock. flock cannot be
// interrupted by a context, so waiting polls instead of blocking.
const lockPoll = 100 * time.Millisecond

// flock takes an exclusive lock on path (created if missing), waiting
// while ctx lasts. The lock belongs to the open file, so it excludes other
// goroutines of this process as well as other processes, and the kernel
// drops it if the process dies. note, if set, is called once when the lock
// is found held.
func flock(ctx context.Context, path string, note func()) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock: %w", err)
	}
	var t *time.Timer
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if note != nil {
			note()
			note = nil
		}
		if t == nil {
			t = time.NewTimer(lockPoll)
			defer t.Stop()
		} else {
			t.Reset(lockPoll)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("wait for lock %s: %w", path, context.Cause(ctx))
		case <-t.C:
		}
	}
	return func() { f.Close() }, nil // closing the file releases the lock
}
