package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"roost.dev/roost/errdefs"
)

func TestParseQuota(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in   string
		want Quota
		bad  bool
	}{
		{in: "", want: Quota{}},
		{in: "sandboxes=3", want: Quota{LimitSandboxes: 3}},
		{in: " vcpus=8 , memory-mb=4096,disk-mb=0 ", want: Quota{LimitVCPUs: 8, LimitMemoryMB: 4096, LimitDiskMB: 0}},
		{in: "timeout=1h,paused-retention=86400", want: Quota{LimitTimeout: 3600, LimitPausedRetention: 86400}},
		{in: "paused=5,paused=6", want: Quota{LimitPaused: 6}},
		{in: "sandboxes", bad: true},
		{in: "sandboxes=-1", bad: true},
		{in: "sandboxes=1h", bad: true},   // a duration only for the limits in seconds
		{in: "timeout=1.5s", bad: true},   // whole seconds only
		{in: "cpus=4", bad: true},         // unknown limit
		{in: "memory-mb=lots", bad: true}, // not a number
	}
	for _, c := range cases {
		got, err := ParseQuota(c.in)
		switch {
		case c.bad && !errors.Is(err, errdefs.ErrInvalid):
			t.Errorf("ParseQuota(%q) = %v, %v; want errdefs.ErrInvalid", c.in, got, err)
		case !c.bad && (err != nil || got.String() != c.want.String() || len(got) != len(c.want)):
			t.Errorf("ParseQuota(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	q := Quota{LimitPausedRetention: 60, LimitSandboxes: 2}
	if back, err := ParseQuota(q.String()); err != nil || back.String() != q.String() {
		t.Errorf("round trip of %v = %v, %v", q, back, err)
	}
}

func TestQuotaErrorNamesLimit(t *testing.T) {
	t.Parallel()
	err := error(&QuotaError{Limit: LimitSandboxes, Max: 2, Used: 2, Asked: 1})
	if !errors.Is(err, errdefs.ErrExhausted) {
		t.Fatalf("%v does not wrap errdefs.ErrExhausted", err)
	}
	want := `team quota "sandboxes" exceeded (concurrent sandboxes (starting or running)): the limit is 2, 2 in use, 1 more asked`
	if err.Error() != want {
		t.Fatalf("message %q, want %q", err.Error(), want)
	}
	err = Quota{LimitTimeout: 60}.CheckTimeout(61 * time.Second)
	var qe *QuotaError
	if !errors.As(err, &qe) || qe.Limit != LimitTimeout || qe.Asked != 61 {
		t.Fatalf("CheckTimeout(61s) under 60 s = %v", err)
	}
	if err := (Quota{LimitTimeout: 60}).CheckTimeout(time.Minute); err != nil {
		t.Fatalf("CheckTimeout at the limit: %v", err)
	}
	if err := (Quota{}).CheckTimeout(1000 * time.Hour); err != nil {
		t.Fatalf("CheckTimeout without a limit: %v", err)
	}
}

func TestTeamQuota(t *testing.T) {
	eachDB(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		mustTeam(t, s, "a")
		if q, err := s.TeamQuota(ctx, "a"); err != nil || len(q) != 0 {
			t.Fatalf("quota of a new team = %v, %v; want empty", q, err)
		}
		want := Quota{LimitSandboxes: 3, LimitTimeout: 600}
		if err := s.SetTeamQuota(ctx, "a", want); err != nil {
			t.Fatalf("set: %v", err)
		}
		if q, err := s.TeamQuota(ctx, "a"); err != nil || q.String() != want.String() {
			t.Fatalf("quota = %v, %v; want %v", q, err, want)
		}
		// A set replaces the team's limits.
		if err := s.SetTeamQuota(ctx, "a", Quota{LimitPaused: 0}); err != nil {
			t.Fatalf("replace: %v", err)
		}
		if q, _ := s.TeamQuota(ctx, "a"); q.String() != "paused=0" {
			t.Fatalf("quota after replace = %v", q)
		}
		for _, c := range []struct {
			name string
			err  error
			want error
		}{
			{"get unknown team", func() error { _, err := s.TeamQuota(ctx, "nope"); return err }(), errdefs.ErrNotFound},
			{"set unknown team", s.SetTeamQuota(ctx, "nope", Quota{LimitVCPUs: 1}), errdefs.ErrNotFound},
			{"unknown limit", s.SetTeamQuota(ctx, "a", Quota{"gpus": 1}), errdefs.ErrInvalid},
			{"negative", s.SetTeamQuota(ctx, "a", Quota{LimitVCPUs: -1}), errdefs.ErrInvalid},
		} {
			if !errors.Is(c.err, c.want) {
				t.Errorf("%s: %v, want %v", c.name, c.err, c.want)
			}
		}
		if q, _ := s.TeamQuota(ctx, "a"); q.String() != "paused=0" {
			t.Fatalf("a refused set changed the quota: %v", q)
		}
	})
}

func TestCreateSandboxWithin(t *testing.T) {
	eachDB(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		mustTeam(t, s, "a")
		mustTeam(t, s, "b")
		defaults := Quota{LimitSandboxes: 2, LimitVCPUs: 5, LimitDiskMB: 3000}
		create := func(id, team string, vcpus int, state SandboxState) error {
			sb := newSandbox(id, team, 0)
			sb.VCPUs, sb.State = vcpus, state
			return s.CreateSandboxWithin(ctx, sb, defaults)
		}
		if err := create("a1", "a", 2, SandboxStarting); err != nil {
			t.Fatal(err)
		}
		if err := create("a2", "a", 2, SandboxRunning); err != nil {
			t.Fatal(err)
		}
		err := create("a3", "a", 1, SandboxStarting)
		var qe *QuotaError
		if !errors.As(err, &qe) || qe.Limit != LimitSandboxes || qe.Used != 2 || !errors.Is(err, errdefs.ErrExhausted) {
			t.Fatalf("third create under sandboxes=2: %v", err)
		}
		if _, err := s.LookupSandbox(ctx, "a3"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("refused create was stored: %v", err)
		}
		// Another team has its own count; its limits may differ.
		if err := s.SetTeamQuota(ctx, "b", Quota{LimitVCPUs: 1}); err != nil {
			t.Fatal(err)
		}
		if err := create("b1", "b", 2, SandboxRunning); !errors.As(err, &qe) || qe.Limit != LimitVCPUs {
			t.Fatalf("b's 2 vCPUs under its vcpus=1: %v", err)
		}
		if err := create("b1", "b", 1, SandboxRunning); err != nil {
			t.Fatalf("b within its quota: %v", err)
		}
		u, err := s.TeamUsage(ctx, "a")
		if want := (Usage{Sandboxes: 2, VCPUs: 4, MemoryMB: 1024, DiskMB: 2048}); err != nil || u != want {
			t.Fatalf("usage of a = %+v, %v; want %+v", u, err, want)
		}

		// Pausing frees a concurrency slot but keeps the disk; a pause
		// always passes, and a resume is checked.
		paused, err := s.UpdateSandboxWithin(ctx, "a1", defaults, func(sb *Sandbox) error { sb.State = SandboxPaused; return nil })
		if err != nil || paused.PausedAt.IsZero() {
			t.Fatalf("pause = %+v, %v; want PausedAt set", paused, err)
		}
		if got, _ := s.LookupSandbox(ctx, "a1"); !got.PausedAt.Equal(paused.PausedAt) {
			t.Fatalf("stored PausedAt %v, returned %v", got.PausedAt, paused.PausedAt)
		}
		if err := create("a3", "a", 1, SandboxStarting); !errors.As(err, &qe) || qe.Limit != LimitDiskMB {
			t.Fatalf("a3 with the paused sandbox's disk still held: %v", err)
		}
		sb := newSandbox("a3", "a", 0)
		sb.DiskMB = 500
		if err := s.CreateSandboxWithin(ctx, sb, defaults); err != nil {
			t.Fatalf("a3 in the slot a1's pause freed: %v", err)
		}
		resume := func(sb *Sandbox) error { sb.State = SandboxRunning; return nil }
		if _, err := s.UpdateSandboxWithin(ctx, "a1", defaults, resume); !errors.As(err, &qe) || qe.Limit != LimitSandboxes {
			t.Fatalf("resume at the limit: %v", err)
		}
		if got, _ := s.LookupSandbox(ctx, "a1"); got.State != SandboxPaused || got.PausedAt.IsZero() {
			t.Fatalf("refused resume changed a1: %+v", got)
		}
		// Lowered below use: what raises no use still passes.
		if err := s.SetTeamQuota(ctx, "a", Quota{LimitSandboxes: 0}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.UpdateSandboxWithin(ctx, "a2", defaults, func(sb *Sandbox) error { sb.Metadata["k"] = "v"; return nil }); err != nil {
			t.Fatalf("relabel over a lowered limit: %v", err)
		}
		if err := s.DeleteSandbox(ctx, "a2"); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteSandbox(ctx, "a3"); err != nil {
			t.Fatal(err)
		}
		if err := s.SetTeamQuota(ctx, "a", nil); err != nil {
			t.Fatal(err)
		}
		resumed, err := s.UpdateSandboxWithin(ctx, "a1", defaults, resume)
		if err != nil || !resumed.PausedAt.IsZero() {
			t.Fatalf("resume with room = %+v, %v; want PausedAt cleared", resumed, err)
		}
		if err := create("x", "nope", 1, SandboxStarting); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("create for an unknown team: %v", err)
		}
	})
}

// Creates racing for the last slots: exactly the limit succeed, on both
// databases, whatever the interleaving.
func TestCreateSandboxWithinRace(t *testing.T) {
	eachDB(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		mustTeam(t, s, "a")
		const limit, racers = 3, 12
		defaults := Quota{LimitSandboxes: limit}
		var wg sync.WaitGroup
		errs := make([]error, racers)
		for i := range racers {
			wg.Go(func() {
				sb := newSandbox(fmt.Sprintf("r%d", i), "a", i)
				sb.State = SandboxStarting
				errs[i] = s.CreateSandboxWithin(ctx, sb, defaults)
			})
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			var qe *QuotaError
			switch {
			case err == nil:
				ok++
			case !errors.As(err, &qe) || qe.Limit != LimitSandboxes:
				t.Errorf("racing create: %v, want nil or a sandboxes quota error", err)
			}
		}
		if n, _ := s.CountSandboxes(ctx, SandboxFilter{TeamID: "a"}); ok != limit || n != limit {
			t.Fatalf("%d creates succeeded and %d are stored; want exactly %d", ok, n, limit)
		}
	})
}
