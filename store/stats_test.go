package store

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"roost.dev/roost/errdefs"
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

// TestCordonAndDeleteHost: a cordon survives the host's re-registration
// (UpsertHost) and a state change; a host is deleted only once it holds
// no live sandbox.
func TestCordonAndDeleteHost(t *testing.T) {
	eachDB(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		mustTeam(t, s, "t1")
		h := Host{ID: "h1", Name: "h1", URL: "https://h1:7070", Runtime: "namespace", State: HostReady}
		if err := s.UpsertHost(ctx, h); err != nil {
			t.Fatal(err)
		}
		if err := s.SetHostCordoned(ctx, "h1", true); err != nil {
			t.Fatal(err)
		}
		if err := s.UpsertHost(ctx, h); err != nil {
			t.Fatal(err)
		}
		if err := s.SetHostState(ctx, "h1", HostDown); err != nil {
			t.Fatal(err)
		}
		if got, err := s.GetHost(ctx, "h1"); err != nil || !got.Cordoned {
			t.Fatalf("host after re-registration and down: %+v, %v; want cordoned", got, err)
		}
		if err := s.CreateSandbox(ctx, Sandbox{ID: "sb1", TeamID: "t1", HostID: "h1", State: SandboxPaused}); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteHost(ctx, "h1"); !errors.Is(err, errdefs.ErrConflict) {
			t.Fatalf("delete a host with a paused sandbox: %v, want conflict", err)
		}
		if _, err := s.UpdateSandbox(ctx, "sb1", func(sb *Sandbox) error { sb.State = SandboxStopped; return nil }); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteHost(ctx, "h1"); err != nil {
			t.Fatalf("delete a host with only stopped sandboxes: %v", err)
		}
		if _, err := s.GetHost(ctx, "h1"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("deleted host: %v, want not found", err)
		}
		if err := s.DeleteHost(ctx, "h1"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("delete again: %v, want not found", err)
		}
		if err := s.SetHostCordoned(ctx, "nohost", true); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("cordon an unknown host: %v, want not found", err)
		}
	})
}
