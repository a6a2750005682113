package controlplane

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/store"
	"roost.dev/roost/store/storetest"
)

// TestCachedStore: a cached key answers without the store; a key
// deleted through the cache stops working at once, as do a deleted
// team's keys; one deleted behind its back (another replica) within
// readCacheTTL; a touch shows in the cached copy. A quota set through the
// cache shows at once, and a caller's copy is its own.
func TestCachedStore(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, storetest.SQLiteURL(t), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c := newCachedStore(st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	add := func(team, id, plain string) []byte {
		t.Helper()
		if _, err := st.GetTeam(ctx, team); errors.Is(err, errdefs.ErrNotFound) {
			if err := st.CreateTeam(ctx, store.Team{ID: team, Name: team}); err != nil {
				t.Fatal(err)
			}
		}
		h := store.HashKey(plain)
		if err := st.CreateAPIKey(ctx, store.APIKey{ID: id, TeamID: team, Name: id, Hash: h, Prefix: "x"}); err != nil {
			t.Fatal(err)
		}
		return h
	}
	works := func(h []byte) bool {
		t.Helper()
		_, err := c.APIKeyByHash(ctx, h)
		if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatal(err)
		}
		return err == nil
	}

	k1, k2, k3 := add("t1", "k1", "plain-1"), add("t1", "k2", "plain-2"), add("t2", "k3", "plain-3")
	if !works(k1) || !works(k2) || !works(k3) {
		t.Fatal("new keys refused")
	}
	if err := c.DeleteAPIKey(ctx, "t1", store.KindAPIKey, "k1"); err != nil {
		t.Fatal(err)
	}
	if works(k1) {
		t.Error("a key deleted through the cache still works")
	}
	if err := c.DeleteTeam(ctx, "t2"); err != nil {
		t.Fatal(err)
	}
	if works(k3) {
		t.Error("a deleted team's key still works")
	}

	if err := c.SetTeamQuota(ctx, "t1", store.Quota{store.LimitSandboxes: 3}); err != nil {
		t.Fatal(err)
	}
	q, err := c.TeamQuota(ctx, "t1")
	if err != nil || q[store.LimitSandboxes] != 3 {
		t.Fatalf("quota = %v, %v; want sandboxes 3", q, err)
	}
	if err := c.SetTeamQuota(ctx, "t1", store.Quota{store.LimitSandboxes: 5}); err != nil {
		t.Fatal(err)
	}
	q, _ = c.TeamQuota(ctx, "t1")
	if q[store.LimitSandboxes] != 5 {
		t.Errorf("quota after a set = %v, want sandboxes 5", q)
	}
	q[store.LimitSandboxes] = 99
	if q, _ := c.TeamQuota(ctx, "t1"); q[store.LimitSandboxes] != 5 {
		t.Errorf("a caller's change reached the cache: %v", q)
	}

	at := time.Now().UTC().Truncate(time.Microsecond)
	if err := c.TouchAPIKey(ctx, "k2", at); err != nil {
		t.Fatal(err)
	}
	if k, _ := c.APIKeyByHash(ctx, k2); k.LastUsedAt == nil || !k.LastUsedAt.Equal(at) {
		t.Errorf("cached key's last use = %v, want %v", k.LastUsedAt, at)
	}
	if err := st.DeleteAPIKey(ctx, "t1", store.KindAPIKey, "k2"); err != nil { // another replica
		t.Fatal(err)
	}
	if !works(k2) {
		t.Error("the cache asked the store within its TTL")
	}
	time.Sleep(readCacheTTL + 100*time.Millisecond)
	if works(k2) {
		t.Errorf("a key deleted elsewhere still works after %v", readCacheTTL)
	}
}
