package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"roost.dev/roost/errdefs"
)

// TestLeases: one holder at a time; the holder renews; another takes
// the lease once it has expired by the database's clock, or at once when
// it is released; a release by someone else changes nothing.
func TestLeases(t *testing.T) {
	eachDB(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		hold := func(holder string, ttl time.Duration) bool {
			t.Helper()
			ok, err := s.HoldLease(ctx, "leader", holder, ttl)
			if err != nil {
				t.Fatal(err)
			}
			return ok
		}
		holder := func() string {
			t.Helper()
			h, until, err := s.LeaseHolder(ctx, "leader")
			if err != nil {
				t.Fatal(err)
			}
			if h != "" && time.Until(until) > time.Minute {
				t.Errorf("lease until %v: more than its ttl away", until)
			}
			return h
		}
		if h := holder(); h != "" {
			t.Fatalf("holder of a lease never taken = %q", h)
		}
		if !hold("a", time.Minute) || hold("b", time.Minute) || !hold("a", time.Minute) {
			t.Fatal("want a to take and renew the lease and b refused")
		}
		if h := holder(); h != "a" {
			t.Fatalf("holder = %q, want a", h)
		}
		if err := s.ReleaseLease(ctx, "leader", "b"); err != nil || holder() != "a" {
			t.Fatalf("b released a's lease: %v", err)
		}
		if err := s.ReleaseLease(ctx, "leader", "a"); err != nil || holder() != "" {
			t.Fatalf("release: %v, holder %q", err, holder())
		}
		if !hold("b", 200*time.Millisecond) || hold("a", time.Minute) {
			t.Fatal("want b to take a released lease, then a refused")
		}
		time.Sleep(300 * time.Millisecond)
		if holder() != "" || !hold("a", time.Minute) {
			t.Fatal("want b's lease expired and a to take it")
		}
		if hold("b", time.Minute) {
			t.Fatal("b took a's live lease")
		}
		if _, err := s.HoldLease(ctx, "leader", "", time.Second); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("hold without a holder: %v, want invalid", err)
		}
	})
}
