package store

import (
	"context"
	"testing"
	"time"
)

// TestClock: the store's clock is the database's even when this
// process's clock is an hour wrong, and records are stamped by it.
func TestClock(t *testing.T) {
	eachDB(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		st := s.(*sqlStore)
		skew := time.Hour
		if st.clock.read == nil {
			// SQLite's clock is this process's: a skew moves both.
			if d := time.Until(st.Now()); d < -time.Second || d > time.Second {
				t.Fatalf("SQLite clock %v away from this process's", d)
			}
			return
		}
		st.clock.local = func() time.Time { return time.Now().Add(skew) }
		if err := st.clock.sync(ctx); err != nil {
			t.Fatal(err)
		}
		db, err := st.readNow(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if d := st.Now().Sub(db); d < -50*time.Millisecond || d > 50*time.Millisecond {
			t.Fatalf("store clock %v away from the database's with a local skew of %v", d, skew)
		}
		sb := Sandbox{ID: "clock", TeamID: "t", State: SandboxRunning}
		if err := s.CreateTeam(ctx, Team{ID: "t", Name: "t"}); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateSandbox(ctx, sb); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetSandbox(ctx, "t", "clock")
		if err != nil {
			t.Fatal(err)
		}
		if d := got.CreatedAt.Sub(db); d < -time.Second || d > 5*time.Second {
			t.Fatalf("created at %v, %v from the database's clock (local is %v ahead)", got.CreatedAt, d, skew)
		}
	})
}
