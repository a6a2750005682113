package controlplane

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"roost.dev/roost/store"
	"roost.dev/roost/store/storetest"
)

// skewedStore is a store whose database clock is off from this
// process's by skew.
type skewedStore struct {
	store.Store
	skew time.Duration
}

func (s skewedStore) Now() time.Time { return time.Now().Add(s.skew).UTC() }

// TestTimeoutsByStoreClock: a sandbox's timeout is judged by the
// database's clock, not the replica's. With the database an hour behind
// this process, a sandbox that ended a minute ago by this process's
// clock has 59 minutes left, and the leader's timeout pass leaves it
// running.
func TestTimeoutsByStoreClock(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(ctx, storetest.SQLiteURL(t), log)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	skewed := skewedStore{Store: st, skew: -time.Hour}
	s, err := New(Config{}, skewed, log)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := st.CreateTeam(ctx, store.Team{ID: "t", Name: "t"}); err != nil {
		t.Fatal(err)
	}
	sb := store.Sandbox{ID: "sb", TeamID: "t", State: store.SandboxRunning, EndAt: time.Now().Add(-time.Minute)}
	if err := st.CreateSandbox(ctx, sb); err != nil {
		t.Fatal(err)
	}
	s.enforceTimeouts(ctx)
	got, err := st.GetSandbox(ctx, "t", "sb")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != store.SandboxRunning {
		t.Fatalf("a sandbox with 59 minutes left by the database's clock is %s", got.State)
	}

}
