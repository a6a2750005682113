package store

import (
	"bytes"
	"context"
	"sync"
	"testing"
)

func TestEnsureClusterCA(t *testing.T) {
	eachDB(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		// Replicas racing: every one gets the CA the first stored.
		var wg sync.WaitGroup
		got := make([][2][]byte, 4)
		errs := make([]error, 4)
		for i := range got {
			wg.Go(func() {
				c, k, err := s.EnsureClusterCA(ctx, []byte{'c', byte('0' + i)}, []byte{'k', byte('0' + i)})
				got[i], errs[i] = [2][]byte{c, k}, err
			})
		}
		wg.Wait()
		for i := range got {
			if errs[i] != nil {
				t.Fatalf("ensure %d: %v", i, errs[i])
			}
			if !bytes.Equal(got[i][0], got[0][0]) || !bytes.Equal(got[i][1], got[0][1]) || got[i][0][1] != got[i][1][1] {
				t.Fatalf("replica %d got CA %q/%q, replica 0 %q/%q", i, got[i][0], got[i][1], got[0][0], got[0][1])
			}
		}
		if _, _, err := s.EnsureClusterCA(ctx, nil, []byte("k")); err == nil {
			t.Error("empty certificate accepted")
		}
	})
}

// TestHostTokensHashedOnOpen: a host registered before migration 00005
// has its token in plaintext; opening the store replaces it by its hash.
func TestHostTokensHashedOnOpen(t *testing.T) {
	eachDB(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		if err := s.UpsertHost(ctx, Host{ID: "old", State: HostReady}); err != nil {
			t.Fatal(err)
		}
		sq := s.(*sqlStore)
		if _, err := sq.w.ExecContext(ctx, `UPDATE hosts SET token = 'plain-token', token_hash = NULL WHERE id = 'old'`); err != nil {
			t.Fatal(err)
		}
		if err := hashHostTokens(ctx, sq.w, testLog(t)); err != nil {
			t.Fatal(err)
		}
		h, err := s.GetHost(ctx, "old")
		if err != nil || !bytes.Equal(h.TokenHash, HashKey("plain-token")) {
			t.Fatalf("host after open: %+v, %v; want the token's hash", h, err)
		}
		var plain string
		if err := sq.w.QueryRowContext(ctx, `SELECT token FROM hosts WHERE id = 'old'`).Scan(&plain); err != nil || plain != "" {
			t.Fatalf("plaintext token left: %q, %v", plain, err)
		}
	})
}
