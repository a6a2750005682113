package store

import (
	"context"
	"fmt"
	"testing"
)

// TestActiveSandboxesByHost: one query counts each host's starting,
// running and paused sandboxes; stopped, lost and other hosts' do not
// count.
func TestActiveSandboxesByHost(t *testing.T) {
	eachDB(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		mustTeam(t, s, "t1")
		for i, c := range []struct {
			host  string
			state SandboxState
		}{{"h1", SandboxStarting}, {"h1", SandboxRunning}, {"h1", SandboxPaused}, {"h1", SandboxStopped}, {"h1", SandboxLost}, {"h2", SandboxRunning}} {
			if err := s.CreateSandbox(ctx, Sandbox{ID: fmt.Sprintf("sb%d", i), TeamID: "t1", HostID: c.host, State: c.state}); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.ActiveSandboxesByHost(ctx)
		if err != nil || len(got) != 2 || got["h1"] != 3 || got["h2"] != 1 {
			t.Fatalf("active by host = %v, %v; want h1 3, h2 1", got, err)
		}
	})
}
