package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"roost.dev/roost/errdefs"
)

// TestSandboxStarted: a starting sandbox becomes running with the sizes
// and start its agent gave, its metadata kept and its updated_at moved
// forward, as the store returns and keeps it; one no longer starting is
// a conflict, and left as it was; a missing one is not found.
func TestSandboxStarted(t *testing.T) {
	eachDB(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		mustTeam(t, s, "a")
		sb := newSandbox("s1", "a", 7)
		sb.State, sb.StartedAt = SandboxStarting, time.Time{}
		if err := s.CreateSandbox(ctx, sb); err != nil {
			t.Fatal(err)
		}
		before, err := s.LookupSandbox(ctx, "s1")
		if err != nil {
			t.Fatal(err)
		}
		at := base.Add(3 * time.Second)
		got, err := s.SandboxStarted(ctx, "s1", Started{VCPUs: 4, MemoryMB: 2048, DiskMB: 4096, At: at})
		if err != nil {
			t.Fatal(err)
		}
		if got.State != SandboxRunning || got.VCPUs != 4 || got.MemoryMB != 2048 || got.DiskMB != 4096 || !got.StartedAt.Equal(at) ||
			got.Metadata["n"] != "7" || got.EnvVars["FOO"] != "bar" || !got.UpdatedAt.After(before.UpdatedAt) {
			t.Fatalf("started: %+v", got)
		}
		if stored, _ := s.LookupSandbox(ctx, "s1"); !sameSandbox(stored, got) {
			t.Fatalf("stored\n%+v\nreturned\n%+v", stored, got)
		}
		if _, err := s.SandboxStarted(ctx, "s1", Started{VCPUs: 1}); !errors.Is(err, errdefs.ErrConflict) {
			t.Fatalf("started twice: %v, want a conflict", err)
		}
		if stored, _ := s.LookupSandbox(ctx, "s1"); stored.VCPUs != 4 {
			t.Fatalf("a refused start changed the record: %+v", stored)
		}
		if _, err := s.SandboxStarted(ctx, "nope", Started{}); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("missing sandbox: %v, want not found", err)
		}
	})
}
