package microvm

import (
	"fmt"
	"sync"

	"roost.dev/roost/errdefs"
)

// Handles maps sandbox IDs to a driver's handles. An ID can be reserved
// by a call that is still building its handle (Create, Restore,
// Recover), so that a second call for the same ID sees a conflict. The
// zero value is ready to use.
type Handles[H any] struct {
	mu sync.Mutex
	m  map[string]*H // nil value: reserved
}

// Get returns the published handle of id, or ErrNotFound.
func (hs *Handles[H]) Get(id string) (*H, error) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	h := hs.m[id]
	if h == nil {
		return nil, fmt.Errorf("sandbox %s: %w", id, errdefs.ErrNotFound)
	}
	return h, nil
}

// Reserve claims id, or returns ErrConflict when it is taken; Publish(id,
// nil) releases it.
func (hs *Handles[H]) Reserve(id string) error {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if _, ok := hs.m[id]; ok {
		return fmt.Errorf("sandbox %s: %w", id, errdefs.ErrConflict)
	}
	if hs.m == nil {
		hs.m = map[string]*H{}
	}
	hs.m[id] = nil
	return nil
}

// Publish makes h the handle of id; a nil h forgets id.
func (hs *Handles[H]) Publish(id string, h *H) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if h == nil {
		delete(hs.m, id)
		return
	}
	if hs.m == nil {
		hs.m = map[string]*H{}
	}
	hs.m[id] = h
}
