package handles

import (
	"fmt"
	"sync"

	"roost.dev/roost/errdefs"
)

// Table maps sandbox IDs to a driver's handles. An ID can be reserved by
// a call that is still building its handle (Create, Restore, Recover), so
// that a second call for the same ID sees it taken. The zero value is
// ready to use.
type Table[H any] struct {
	mu sync.Mutex    // guards m
	m  map[string]*H // nil value: reserved
}

// Get returns the handle of id. An unknown id wraps errdefs.ErrNotFound;
// one still reserved, errdefs.ErrConflict.
func (t *Table[H]) Get(id string) (*H, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	h, ok := t.m[id]
	switch {
	case !ok:
		return nil, fmt.Errorf("sandbox %s: %w", id, errdefs.ErrNotFound)
	case h == nil:
		return nil, fmt.Errorf("sandbox %s is being set up: %w", id, errdefs.ErrConflict)
	}
	return h, nil
}

// Known reports whether id has a handle or is reserved.
func (t *Table[H]) Known(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.m[id]
	return ok
}

// All returns the handles published now (not the reservations).
func (t *Table[H]) All() []*H {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*H, 0, len(t.m))
	for _, h := range t.m {
		if h != nil {
			out = append(out, h)
		}
	}
	return out
}

// Reserve claims id, or returns an error wrapping
// errdefs.ErrAlreadyExists when it is taken; Publish(id, nil) releases it.
func (t *Table[H]) Reserve(id string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.m[id]; ok {
		return fmt.Errorf("sandbox %s: %w", id, errdefs.ErrAlreadyExists)
	}
	if t.m == nil {
		t.m = map[string]*H{}
	}
	t.m[id] = nil
	return nil
}

// Publish makes h the handle of id; a nil h forgets id.
func (t *Table[H]) Publish(id string, h *H) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if h == nil {
		delete(t.m, id)
		return
	}
	if t.m == nil {
		t.m = map[string]*H{}
	}
	t.m[id] = h
}
