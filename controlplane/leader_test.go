package controlplane

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"roost.dev/roost/store"
	"roost.dev/roost/store/storetest"
)

// cutOff is a store a replica can be cut off from (a partition, a kill
// that leaves its lease behind): every lease call fails while cut.
type cutOff struct {
	store.Store
	cut atomic.Bool
}

var errCut = errors.New("store unreachable")

func (c *cutOff) HoldLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error) {
	if c.cut.Load() {
		return false, errCut
	}
	return c.Store.HoldLease(ctx, name, holder, ttl)
}

func (c *cutOff) ReleaseLease(ctx context.Context, name, holder string) error {
	if c.cut.Load() {
		return errCut
	}
	return c.Store.ReleaseLease(ctx, name, holder)
}

// TestLeadership: of two replicas on one store, one leads; a replica
// stopped gracefully hands over at once; one cut off from the store stops
// leading before the other starts, and the other leads within the lease
// and a third of it. Two never lead at the same time.
func TestLeadership(t *testing.T) {
	storetest.Run(t, func(t *testing.T, dbURL string) {
		st, err := store.Open(context.Background(), dbURL, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		const ttl = 600 * time.Millisecond
		var leaders, most atomic.Int32
		lead := func(ctx context.Context) {
			n := leaders.Add(1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			<-ctx.Done()
			leaders.Add(-1)
		}
		type replica struct {
			l      *leadership
			st     *cutOff
			cancel context.CancelFunc
			done   chan struct{}
		}
		start := func(id string) *replica {
			r := &replica{st: &cutOff{Store: st}, done: make(chan struct{})}
			r.l = &leadership{st: r.st, id: id, ttl: ttl, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			ctx, cancel := context.WithCancel(context.Background())
			r.cancel = cancel
			go func() {
				defer close(r.done)
				r.l.run(ctx, lead)
			}()
			return r
		}
		// waitLeader waits for exactly one of rs to lead, and returns it and
		// how long that took.
		waitLeader := func(rs ...*replica) (*replica, time.Duration) {
			t.Helper()
			begin := time.Now()
			for time.Since(begin) < 10*ttl {
				var on []*replica
				for _, r := range rs {
					if r.l.leading.Load() {
						on = append(on, r)
					}
				}
				if len(on) == 1 {
					return on[0], time.Since(begin)
				}
				time.Sleep(5 * time.Millisecond)
			}
			t.Fatal("no single leader")
			return nil, 0
		}
		a, b := start("a"), start("b")
		first, _ := waitLeader(a, b)
		other := b
		if first == b {
			other = a
		}

		first.cancel() // graceful: the lease is released
		<-first.done
		if _, took := waitLeader(other); took > ttl/3+200*time.Millisecond {
			t.Errorf("handover after a graceful stop took %v, want within a renewal (%v)", took, ttl/3)
		}

		c := start("c")
		time.Sleep(ttl)
		if c.l.leading.Load() {
			t.Fatal("c leads beside a live leader")
		}
		other.st.cut.Store(true) // the leader loses the store
		cutAt := time.Now()
		if _, took := waitLeader(c); took > ttl+ttl/3+200*time.Millisecond {
			t.Errorf("failover took %v, want within %v", took, ttl+ttl/3)
		}
		if other.l.leading.Load() {
			t.Error("the cut-off replica still leads")
		}
		t.Logf("failover after the leader was cut off: %v (lease %v)", time.Since(cutAt), ttl)
		var wg sync.WaitGroup
		for _, r := range []*replica{other, c} {
			wg.Go(func() { r.cancel(); <-r.done })
		}
		wg.Wait()
		if most.Load() != 1 {
			t.Errorf("%d replicas led at once", most.Load())
		}
	})
}
