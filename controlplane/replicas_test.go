package controlplane

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"roost.dev/roost/store"
	"roost.dev/roost/store/storetest"
	"roost.dev/roost/wire"
)

// TestReplicas: two control planes on one PostgreSQL database. One
// leads; a key deleted through one stops working on the other at once
// (a store notice empties its cache, well within readCacheTTL); when the
// leader stops, the other leads.
func TestReplicas(t *testing.T) {
	dbURL := storetest.PostgresURL(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	type replica struct {
		s      *Server
		url    string
		cancel context.CancelFunc
		done   chan struct{}
	}
	start := func(name string) *replica {
		st, err := store.Open(context.Background(), dbURL, log)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		s, err := New(Config{ReplicaID: name, LeaderLease: 600 * time.Millisecond}, st, log)
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(s.Handler())
		ctx, cancel := context.WithCancel(context.Background())
		r := &replica{s: s, url: srv.URL, cancel: cancel, done: make(chan struct{})}
		go func() {
			defer close(r.done)
			_ = s.Run(ctx)
		}()
		t.Cleanup(func() {
			r.cancel()
			<-r.done
			srv.Close()
			s.Close()
		})
		return r
	}
	a, b := start("a"), start("b")
	key, err := a.s.CreateTeamWithKey(context.Background(), "t")
	if err != nil {
		t.Fatal(err)
	}
	list := func(r *replica) int {
		t.Helper()
		req, _ := http.NewRequest("GET", r.url+"/v2/sandboxes", nil)
		req.Header.Set(wire.HeaderAPIKey, key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if list(a) != http.StatusOK || list(b) != http.StatusOK {
		t.Fatal("the key does not work on both replicas")
	}
	k, err := a.s.store.APIKeyByHash(context.Background(), store.HashKey(key))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.s.store.DeleteAPIKey(context.Background(), k.TeamID, k.Kind, k.ID); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	for list(b) != http.StatusUnauthorized {
		if time.Since(deleted) > readCacheTTL/2 {
			t.Fatalf("the other replica still takes a deleted key after %v", time.Since(deleted))
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("the other replica refused the deleted key after %v", time.Since(deleted))

	leader := func() *replica {
		t.Helper()
		for range 400 {
			var on []*replica
			for _, r := range []*replica{a, b} {
				if r.s.Leading() {
					on = append(on, r)
				}
			}
			if len(on) == 1 {
				return on[0]
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatal("no single leader")
		return nil
	}
	first := leader()
	first.cancel()
	<-first.done
	if next := leader(); next == first {
		t.Fatal("the stopped replica still leads")
	}
}
