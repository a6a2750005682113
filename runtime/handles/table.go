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

// Publish makes h the handle of id, reserved or not.
func (t *Table[H]) Publish(id string, h *H) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[string]*H{}
	}
	t.m[id] = h
}

// Delete forgets id.
func (t *Table[H]) Delete(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m, id)
}

// Reserve claims id for a call that builds its handle, or returns an
// error wrapping errdefs.ErrAlreadyExists when it is taken. The caller
// defers the Reservation's Release.
func (t *Table[H]) Reserve(id string) (*Reservation[H], error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.m[id]; ok {
		return nil, fmt.Errorf("sandbox %s: %w", id, errdefs.ErrAlreadyExists)
	}
	if t.m == nil {
		t.m = map[string]*H{}
	}
	t.m[id] = nil
	return &Reservation[H]{t: t, id: id}, nil
}

// Reservation is an ID reserved by a call still building its handle, and
// the steps that call took so far, to undo if it fails: a cleanup stack
// that unwinds exactly once.
type Reservation[H any] struct {
	t    *Table[H]
	id   string
	undo []func()
}

// OnFail pushes a step that undoes what the call just acquired.
func (r *Reservation[H]) OnFail(undo func()) { r.undo = append(r.undo, undo) }

// Publish makes h the handle of the reserved ID.
func (r *Reservation[H]) Publish(h *H) { r.t.Publish(r.id, h) }

// Release ends the reservation. Unless a handle was published for the
// ID, the steps pushed with OnFail run, the last first, and the ID is
// free again. A second Release does nothing.
func (r *Reservation[H]) Release() {
	r.t.mu.Lock()
	h, reserved := r.t.m[r.id]
	r.t.mu.Unlock()
	if !reserved || h != nil {
		return
	}
	for i := len(r.undo) - 1; i >= 0; i-- {
		r.undo[i]()
	}
	r.undo = nil
	r.t.Delete(r.id)
}
