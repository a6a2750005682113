package controlplane

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/store"
)

// hostsViewTTL is how old the hosts and their sandbox counts that
// scheduling ranks by may get: one store read a second, whatever the
// create rate and the number of hosts.
const hostsViewTTL = time.Second

// hostsView is the hosts and how many active sandboxes each holds, read
// from the store at most every hostsViewTTL, with the sandboxes this
// replica placed since counted in (choose).
type hostsView struct {
	mu     sync.Mutex // guards the fields below
	at     time.Time
	hosts  []store.Host
	active map[string]int
}

// choose has pick rank the view (read again from st when older than
// hostsViewTTL, or when fresh) under the view's lock, and counts the
// host it picks as placed: every create ranks, and a copy of the view
// for each cost more than the ranking.
func (v *hostsView) choose(ctx context.Context, st store.Store, fresh bool, pick func([]store.Host, map[string]int) (store.Host, bool)) (store.Host, bool, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := v.refreshLocked(ctx, st, fresh); err != nil {
		return store.Host{}, false, err
	}
	h, ok := pick(v.hosts, v.active)
	if ok && v.active != nil {
		v.active[h.ID]++
	}
	return h, ok, nil
}

// host returns host id as the view has it (read again as read does);
// ok is false when the view has no such host.
func (v *hostsView) host(ctx context.Context, st store.Store, id string) (h store.Host, ok bool, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := v.refreshLocked(ctx, st, false); err != nil {
		return store.Host{}, false, err
	}
	i := slices.IndexFunc(v.hosts, func(h store.Host) bool { return h.ID == id })
	if i < 0 {
		return store.Host{}, false, nil
	}
	return v.hosts[i], true, nil
}

// refreshLocked reads the view from st when older than hostsViewTTL or
// when fresh.
func (v *hostsView) refreshLocked(ctx context.Context, st store.Store, fresh bool) error {
	if !fresh && time.Since(v.at) < hostsViewTTL {
		return nil
	}
	hosts, err := st.ListHosts(ctx)
	if err != nil {
		return err
	}
	active, err := st.ActiveSandboxesByHost(ctx)
	if err != nil {
		return err
	}
	v.hosts, v.active, v.at = hosts, active, time.Now()
	return nil
}

// expire has the next read go to the store (a host changed).
func (v *hostsView) expire() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.at = time.Time{}
}

// schedule picks a ready, uncordoned host with room: the one with the fewest active
// sandboxes, then the most memory, then the lowest ID. No host is
// ErrUnavailable (503).
func (s *Server) schedule(ctx context.Context) (store.Host, error) {
	return s.scheduleWhere(ctx, nil)
}

// scheduleWhere is schedule among the hosts keep accepts (nil: all). It
// ranks by a view at most hostsViewTTL old; a refusal (no host with
// room) is decided on a fresh one.
func (s *Server) scheduleWhere(ctx context.Context, keep func(store.Host) bool) (store.Host, error) {
	for _, fresh := range []bool{false, true} {
		h, ok, err := s.hosts.choose(ctx, s.store, fresh, func(hosts []store.Host, active map[string]int) (store.Host, bool) {
			return s.pick(hosts, active, keep)
		})
		if err != nil {
			return store.Host{}, fmt.Errorf("schedule: %w", err)
		}
		if ok {
			return h, nil
		}
	}
	return store.Host{}, fmt.Errorf("no host has room for a sandbox: %w", errdefs.ErrUnavailable)
}

// pick ranks hosts as schedule says. Hosts a create could not reach are
// left out while others can take the sandbox. It runs under the hosts
// view's lock (hostsView.choose): it reads, and changes nothing.
func (s *Server) pick(hosts []store.Host, active map[string]int, keep func(store.Host) bool) (store.Host, bool) {
	avoided := s.avoid.hosts()
	if len(avoided) > 0 && slices.ContainsFunc(hosts, func(h store.Host) bool {
		return !avoided[h.ID] && h.State == store.HostReady && !h.Cordoned && (keep == nil || keep(h))
	}) {
		also := keep
		keep = func(h store.Host) bool { return !avoided[h.ID] && (also == nil || also(h)) }
	}
	var best store.Host
	bestCount, found := 0, false
	for _, h := range hosts { // ordered by ID: the tie-break
		if h.State != store.HostReady || h.Cordoned || keep != nil && !keep(h) {
			continue
		}
		n := active[h.ID]
		if h.MaxSandboxes > 0 && n >= h.MaxSandboxes {
			continue
		}
		if !found || n < bestCount || (n == bestCount && h.MemoryMB > best.MemoryMB) {
			best, bestCount, found = h, n, true
		}
	}
	return best, found
}
