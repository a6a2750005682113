package controlplane

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"roost.dev/roost/store"
)

// Replicas of the control plane share one store. Every replica serves
// the API and the proxy; the work that must run once (timeouts,
// retention, pruning, webhook delivery, reconciling hosts) runs on the
// leader only: the replica holding the store's lease leaderLease.
const (
	leaderLease = "leader"
	// defaultLeaderLease is how long a leader's lease lasts unrenewed:
	// a replica that dies leading is replaced within it and a renewal.
	defaultLeaderLease = 3 * time.Second
)

// leadership holds the leader lease for one replica, id, while it can.
type leadership struct {
	st  store.Leases
	id  string
	ttl time.Duration
	log *slog.Logger
	// leading is whether this replica leads now.
	leading atomic.Bool
}

// newReplicaID names this process among the replicas: its host's name
// and a random suffix (a restarted replica is a new one).
func newReplicaID() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	if host == "" {
		host = "replica"
	}
	return host + "-" + hex.EncodeToString(b)
}

// run tries for the lease, and renews it, every third of its ttl until
// ctx ends, then gives it up. While it holds the lease, lead runs with a
// context that ends as soon as the lease is in doubt: a renewal that
// failed or was refused. A renewal is bounded by the same third, so a
// leader cut off from the store stops leading within two thirds of the
// ttl of its last renewal, before any other replica can take the lease.
func (l *leadership) run(ctx context.Context, lead func(context.Context)) {
	every := l.ttl / 3
	t := time.NewTicker(every)
	defer t.Stop()
	var stop context.CancelFunc
	done := make(chan struct{})
	step := func() {
		hctx, cancel := context.WithTimeout(ctx, every)
		held, err := l.st.HoldLease(hctx, leaderLease, l.id, l.ttl)
		cancel()
		switch {
		case held && stop == nil:
			var lctx context.Context
			lctx, stop = context.WithCancel(ctx)
			done = make(chan struct{})
			l.leading.Store(true)
			l.log.Info("leading the control plane", "replica", l.id)
			go func() {
				defer close(done)
				lead(lctx)
			}()
		case !held && stop != nil:
			stop()
			<-done
			stop = nil
			l.leading.Store(false)
			l.log.Warn("no longer leading the control plane", "replica", l.id, "err", err)
		case err != nil && ctx.Err() == nil:
			l.log.Warn("leader lease", "replica", l.id, "err", err)
		}
	}
	for {
		step()
		select {
		case <-ctx.Done():
			if stop != nil {
				stop()
				<-done
				l.leading.Store(false)
			}
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), every)
			defer cancel()
			if err := l.st.ReleaseLease(rctx, leaderLease, l.id); err != nil {
				l.log.Warn("release leader lease", "replica", l.id, "err", err)
			}
			return
		case <-t.C:
		}
	}
}
