package controlplane

import (
	"sync"
	"time"
)

// avoidFor is how long a host whose agent a create could not reach gets
// no new sandboxes from this replica, unless the reconciler hears from it
// sooner. By then the reconciler has marked a dead host down.
const avoidFor = 10 * time.Second

// hostAvoidance is the hosts this replica could not reach lately.
type hostAvoidance struct {
	mu    sync.Mutex
	until map[string]time.Time
}

// mark avoids host id for avoidFor.
func (a *hostAvoidance) mark(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.until == nil {
		a.until = map[string]time.Time{}
	}
	a.until[id] = time.Now().Add(avoidFor)
}

// forget stops avoiding host id: it answered.
func (a *hostAvoidance) forget(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.until, id)
}

// hosts is the hosts avoided now.
func (a *hostAvoidance) hosts() map[string]bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	avoided := map[string]bool{}
	for id, t := range a.until {
		if now.After(t) {
			delete(a.until, id)
			continue
		}
		avoided[id] = true
	}
	return avoided
}
