package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"roost.dev/roost/errdefs"
)

// base is a fixed instant, so tests compare times without a wall clock.
var base = time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)

// backend opens fresh, empty databases of one kind.
type backend struct {
	name string
	// url returns the URL of a new empty database, removed at cleanup.
	url func(t *testing.T) string
}

func backends(t *testing.T) []backend {
	bs := []backend{{name: "sqlite", url: func(t *testing.T) string {
		return "sqlite://" + filepath.Join(t.TempDir(), "roost.db")
	}}}
	if pg := os.Getenv("ROOST_TEST_POSTGRES"); pg != "" {
		bs = append(bs, backend{name: "postgres", url: func(t *testing.T) string { return pgSchema(t, pg) }})
	} else {
		t.Log("ROOST_TEST_POSTGRES not set: PostgreSQL not tested")
	}
	return bs
}

// pgSchema creates a schema of its own for one test and returns a URL
// that uses it; the schema is dropped at cleanup.
func pgSchema(t *testing.T, pgURL string) string {
	t.Helper()
	var b [6]byte
	rand.Read(b[:])
	schema := "roost_test_" + hex.EncodeToString(b[:])
	admin, err := sql.Open("pgx", pgURL)
	if err != nil {
		t.Fatalf("open postgres: %v", err)
	}
	ctx := context.Background()
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		admin.Close()
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		defer admin.Close()
		if _, err := admin.ExecContext(context.Background(), "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	sep := "?"
	if strings.Contains(pgURL, "?") {
		sep = "&"
	}
	return pgURL + sep + "search_path=" + schema
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// eachDB runs fn as a parallel subtest against a fresh store of every
// backend.
func eachDB(t *testing.T, fn func(t *testing.T, s Store)) {
	t.Parallel()
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			s, err := Open(context.Background(), b.url(t), testLog(t))
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			t.Cleanup(func() { s.Close() })
			fn(t, s)
		})
	}
}

func mustTeam(t *testing.T, s Store, id string) {
	t.Helper()
	if err := s.CreateTeam(context.Background(), Team{ID: id, Name: "team " + id, CreatedAt: base}); err != nil {
		t.Fatalf("create team %s: %v", id, err)
	}
}

func TestOpenMigratesAndReopens(t *testing.T) {
	t.Parallel()
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			url := b.url(t)
			var logs strings.Builder
			log := slog.New(slog.NewTextHandler(&logs, nil))
			s, err := Open(ctx, url, log)
			if err != nil {
				t.Fatalf("open empty database: %v", err)
			}
			if n := strings.Count(logs.String(), "store migration applied"); n == 0 {
				t.Fatalf("first open applied no migration; logs:\n%s", logs.String())
			}
			mustTeam(t, s, "t1")
			if err := s.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			// Re-opening applies nothing and keeps the data.
			logs.Reset()
			s, err = Open(ctx, url, log)
			if err != nil {
				t.Fatalf("re-open: %v", err)
			}
			if strings.Contains(logs.String(), "store migration applied") {
				t.Fatalf("re-open applied migrations again:\n%s", logs.String())
			}
			defer s.Close()
			got, err := s.GetTeam(ctx, "t1")
			if err != nil || got.Name != "team t1" || !got.CreatedAt.Equal(base) {
				t.Fatalf("team after re-open = %+v, %v", got, err)
			}
		})
	}
}

func TestOpenRejects(t *testing.T) {
	t.Parallel()
	for _, url := range []string{"mysql://x", "sqlite://", ":memory:", "sqlite:///tmp/a?b"} {
		if s, err := Open(context.Background(), url, nil); !errors.Is(err, errdefs.ErrInvalid) {
			if s != nil {
				s.Close()
			}
			t.Errorf("Open(%q) = %v, want errdefs.ErrInvalid", url, err)
		}
	}
}

func TestTeamsAndAPIKeys(t *testing.T) {
	eachDB(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		mustTeam(t, s, "a")
		mustTeam(t, s, "b")
		if err := s.CreateTeam(ctx, Team{ID: "a"}); !errors.Is(err, errdefs.ErrConflict) {
			t.Fatalf("duplicate team: %v, want errdefs.ErrConflict", err)
		}
		if _, err := s.GetTeam(ctx, "nope"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("unknown team: %v, want errdefs.ErrNotFound", err)
		}
		keys := []APIKey{
			{ID: "k1", TeamID: "a", Name: "first", Hash: HashKey("roost_secret1"), Prefix: "roost_se", CreatedAt: base},
			{ID: "k2", TeamID: "a", Name: "second", Hash: HashKey("roost_secret2"), Prefix: "roost_se", CreatedAt: base.Add(time.Second)},
			{ID: "k3", TeamID: "b", Name: "other", Hash: HashKey("roost_secret3"), Prefix: "roost_se", CreatedAt: base},
			{ID: "t1", TeamID: "a", Kind: KindAccessToken, Name: "token", Hash: HashKey("sk_e2b_1"), Prefix: "sk_e2b_1", MaskSuffix: "ab12", CreatedAt: base},
		}
		for _, k := range keys {
			if err := s.CreateAPIKey(ctx, k); err != nil {
				t.Fatalf("create key %s: %v", k.ID, err)
			}
		}
		errCases := []struct {
			name string
			key  APIKey
			want error
		}{
			{"duplicate id", APIKey{ID: "k1", TeamID: "a", Hash: HashKey("x")}, errdefs.ErrConflict},
			{"duplicate hash", APIKey{ID: "k9", TeamID: "a", Hash: HashKey("roost_secret1")}, errdefs.ErrConflict},
			{"unknown team", APIKey{ID: "k8", TeamID: "zz", Hash: HashKey("y")}, errdefs.ErrNotFound},
			{"no hash", APIKey{ID: "k7", TeamID: "a"}, errdefs.ErrInvalid},
			{"unknown kind", APIKey{ID: "k6", TeamID: "a", Kind: "cookie", Hash: HashKey("z")}, errdefs.ErrInvalid},
		}
		for _, c := range errCases {
			if err := s.CreateAPIKey(ctx, c.key); !errors.Is(err, c.want) {
				t.Errorf("%s: %v, want %v", c.name, err, c.want)
			}
		}
		got, err := s.APIKeyByHash(ctx, HashKey("roost_secret2"))
		if err != nil || got.ID != "k2" || got.TeamID != "a" || got.Kind != KindAPIKey || got.Name != "second" || got.LastUsedAt != nil ||
			!got.CreatedAt.Equal(keys[1].CreatedAt) || string(got.Hash) != string(keys[1].Hash) {
			t.Fatalf("key by hash = %+v, %v", got, err)
		}
		if _, err := s.APIKeyByHash(ctx, HashKey("wrong")); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("unknown hash: %v", err)
		}
		if tok, err := s.APIKeyByHash(ctx, HashKey("sk_e2b_1")); err != nil || tok.Kind != KindAccessToken || tok.MaskSuffix != "ab12" {
			t.Fatalf("token by hash = %+v, %v", tok, err)
		}
		list, err := s.ListAPIKeys(ctx, "a", KindAPIKey)
		if err != nil || len(list) != 2 || list[0].ID != "k1" || list[1].ID != "k2" {
			t.Fatalf("list keys of a = %+v, %v", list, err)
		}
		if list, err := s.ListAPIKeys(ctx, "a", KindAccessToken); err != nil || len(list) != 1 || list[0].ID != "t1" {
			t.Fatalf("list tokens of a = %+v, %v", list, err)
		}
		if err := s.RenameAPIKey(ctx, "a", KindAPIKey, "k2", "renamed"); err != nil {
			t.Fatalf("rename: %v", err)
		}
		if got, _ := s.APIKeyByHash(ctx, HashKey("roost_secret2")); got.Name != "renamed" {
			t.Fatalf("renamed key's name = %q", got.Name)
		}
		for _, c := range []struct {
			team string
			kind KeyKind
			id   string
		}{{"b", KindAPIKey, "k2"}, {"a", KindAccessToken, "k2"}, {"a", KindAPIKey, "t1"}} {
			if err := s.RenameAPIKey(ctx, c.team, c.kind, c.id, "x"); !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("rename %s %s of %s: %v, want errdefs.ErrNotFound", c.kind, c.id, c.team, err)
			}
			if err := s.DeleteAPIKey(ctx, c.team, c.kind, c.id); !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("delete %s %s of %s: %v, want errdefs.ErrNotFound", c.kind, c.id, c.team, err)
			}
		}
		used := base.Add(time.Hour)
		if err := s.TouchAPIKey(ctx, "k1", used); err != nil {
			t.Fatalf("touch: %v", err)
		}
		if got, _ := s.APIKeyByHash(ctx, HashKey("roost_secret1")); got.LastUsedAt == nil || !got.LastUsedAt.Equal(used) {
			t.Fatalf("last used = %v, want %v", got.LastUsedAt, used)
		}
		if err := s.TouchAPIKey(ctx, "nope", used); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("touch unknown: %v", err)
		}
		if err := s.DeleteAPIKey(ctx, "a", KindAPIKey, "k1"); err != nil {
			t.Fatalf("delete: %v", err)
		}
		if _, err := s.APIKeyByHash(ctx, HashKey("roost_secret1")); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("deleted key still authenticates: %v", err)
		}
	})
}

func TestRegistrationToken(t *testing.T) {
	eachDB(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		tok := HashKey("register-me")
		if err := s.CreateRegistrationToken(ctx, tok, base.Add(time.Hour)); err != nil {
			t.Fatalf("create: %v", err)
		}
		if err := s.CreateRegistrationToken(ctx, tok, base.Add(time.Hour)); !errors.Is(err, errdefs.ErrConflict) {
			t.Fatalf("duplicate token: %v, want errdefs.ErrConflict", err)
		}
		const n = 16
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() { errs[i] = s.ConsumeRegistrationToken(ctx, tok, base) })
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, errdefs.ErrNotFound):
				t.Errorf("consume: unexpected error %v", err)
			}
		}
		if ok != 1 {
			t.Fatalf("%d of %d concurrent consumers succeeded, want exactly 1", ok, n)
		}

		expiring := HashKey("expiring")
		if err := s.CreateRegistrationToken(ctx, expiring, base.Add(time.Minute)); err != nil {
			t.Fatalf("create: %v", err)
		}
		cases := []struct {
			name string
			hash []byte
			now  time.Time
		}{
			{"unknown", HashKey("never issued"), base},
			{"at expiry", expiring, base.Add(time.Minute)},
			{"after expiry", expiring, base.Add(time.Hour)},
		}
		for _, c := range cases {
			if err := s.ConsumeRegistrationToken(ctx, c.hash, c.now); !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("%s: %v, want errdefs.ErrNotFound", c.name, err)
			}
		}
		if err := s.ConsumeRegistrationToken(ctx, expiring, base.Add(time.Minute-1)); err != nil {
			t.Fatalf("consume just before expiry: %v", err)
		}
	})
}

func TestHosts(t *testing.T) {
	eachDB(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		h := Host{ID: "h2", Name: "two", URL: "http://127.0.0.1:5008", TokenHash: HashKey("agent-token"), Runtime: "namespace",
			Capabilities: []byte(`{"pause":true}`), CPUs: 8, MemoryMB: 16384, MaxSandboxes: 50, State: HostReady,
			RegisteredAt: base}
		if err := s.UpsertHost(ctx, h); err != nil {
			t.Fatalf("upsert: %v", err)
		}
		if err := s.UpsertHost(ctx, Host{ID: "h1", Name: "one", State: HostDraining, RegisteredAt: base}); err != nil {
			t.Fatalf("upsert: %v", err)
		}
		got, err := s.GetHost(ctx, "h2")
		if err != nil || !bytes.Equal(got.TokenHash, h.TokenHash) || string(got.Capabilities) != `{"pause":true}` || got.CPUs != 8 ||
			got.MemoryMB != 16384 || got.MaxSandboxes != 50 || got.State != HostReady || !got.RegisteredAt.Equal(base) ||
			!got.LastHeartbeat.IsZero() {
			t.Fatalf("get host = %+v, %v", got, err)
		}
		// A re-registration changes the fields but keeps RegisteredAt.
		h.URL, h.CPUs, h.RegisteredAt = "http://127.0.0.1:6000", 4, base.Add(time.Hour)
		if err := s.UpsertHost(ctx, h); err != nil {
			t.Fatalf("upsert again: %v", err)
		}
		beat := base.Add(2 * time.Hour)
		usage := HostUsage{Sandboxes: 3, VCPUs: 6, MemoryMB: 3072}
		if err := s.Heartbeat(ctx, "h2", beat, usage); err != nil {
			t.Fatalf("heartbeat: %v", err)
		}
		if err := s.SetHostState(ctx, "h2", HostDown); err != nil {
			t.Fatalf("set state: %v", err)
		}
		got, _ = s.GetHost(ctx, "h2")
		if got.URL != h.URL || got.CPUs != 4 || !got.RegisteredAt.Equal(base) || !got.LastHeartbeat.Equal(beat) ||
			got.Usage != usage || got.State != HostDown {
			t.Fatalf("host after updates = %+v", got)
		}
		hosts, err := s.ListHosts(ctx)
		if err != nil || len(hosts) != 2 || hosts[0].ID != "h1" || hosts[1].ID != "h2" {
			t.Fatalf("list hosts = %+v, %v", hosts, err)
		}
		errCases := []struct {
			name string
			err  error
			want error
		}{
			{"heartbeat unknown", s.Heartbeat(ctx, "nope", beat, usage), errdefs.ErrNotFound},
			{"state unknown host", s.SetHostState(ctx, "nope", HostReady), errdefs.ErrNotFound},
			{"bad state", s.SetHostState(ctx, "h1", "sleepy"), errdefs.ErrInvalid},
			{"get unknown", func() error { _, err := s.GetHost(ctx, "nope"); return err }(), errdefs.ErrNotFound},
			{"upsert without state", s.UpsertHost(ctx, Host{ID: "h3"}), errdefs.ErrInvalid},
		}
		for _, c := range errCases {
			if !errors.Is(c.err, c.want) {
				t.Errorf("%s: %v, want %v", c.name, c.err, c.want)
			}
		}
	})
}

func newSandbox(id, team string, i int) Sandbox {
	return Sandbox{
		ID: id, TeamID: team, HostID: "h1", TemplateID: "base", Alias: "base", ClientID: "h1", State: SandboxRunning,
		VCPUs: 2, MemoryMB: 512, DiskMB: 1024, Metadata: map[string]string{"n": fmt.Sprint(i)},
		EnvVars: map[string]string{"FOO": "bar"}, EnvdVersion: "0.5.7", EnvdAccessToken: "envd-" + id,
		TrafficAccessToken: "traffic-" + id, AllowPublicTraffic: true, AllowInternet: true, TimeoutSecs: 300,
		StartedAt: base, EndAt: base.Add(300 * time.Second), CreatedAt: base.Add(time.Duration(i) * time.Millisecond),
	}
}

func TestSandboxCRUD(t *testing.T) {
	eachDB(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		mustTeam(t, s, "a")
		mustTeam(t, s, "b")
		want := newSandbox("sbx1", "a", 0)
		want.Metadata = map[string]string{"user": "ann", "env": "dev", "odd \"key\"": "a \"b\" \\c ü\n"}
		want.AutoPause, want.AutoResume, want.AutoPauseFilesystem, want.AllowInternet = true, true, true, false
		if err := s.CreateSandbox(ctx, want); err != nil {
			t.Fatalf("create: %v", err)
		}
		got, err := s.GetSandbox(ctx, "a", "sbx1")
		if err != nil {
			t.Fatalf("get: %v", err)
		}
		want.UpdatedAt = got.UpdatedAt
		if !sameSandbox(got, want) {
			t.Fatalf("get =\n%+v\nwant\n%+v", got, want)
		}
		if got, err := s.LookupSandbox(ctx, "sbx1"); err != nil || !sameSandbox(got, want) {
			t.Fatalf("lookup = %+v, %v", got, err)
		}
		errCases := []struct {
			name string
			err  error
			want error
		}{
			{"other team", func() error { _, err := s.GetSandbox(ctx, "b", "sbx1"); return err }(), errdefs.ErrNotFound},
			{"unknown", func() error { _, err := s.LookupSandbox(ctx, "nope"); return err }(), errdefs.ErrNotFound},
			{"duplicate id", s.CreateSandbox(ctx, newSandbox("sbx1", "b", 1)), errdefs.ErrConflict},
			{"unknown team", s.CreateSandbox(ctx, newSandbox("sbx2", "zz", 1)), errdefs.ErrNotFound},
			{"bad state", s.CreateSandbox(ctx, Sandbox{ID: "sbx3", TeamID: "a", State: "dancing"}), errdefs.ErrInvalid},
			{"delete unknown", s.DeleteSandbox(ctx, "nope"), errdefs.ErrNotFound},
		}
		for _, c := range errCases {
			if !errors.Is(c.err, c.want) {
				t.Errorf("%s: %v, want %v", c.name, c.err, c.want)
			}
		}
		// A sandbox with nil maps reads back with empty ones.
		bare := Sandbox{ID: "sbx4", TeamID: "a", State: SandboxStarting}
		if err := s.CreateSandbox(ctx, bare); err != nil {
			t.Fatalf("create bare: %v", err)
		}
		if got, err := s.GetSandbox(ctx, "a", "sbx4"); err != nil || got.Metadata == nil || got.EnvVars == nil ||
			!got.StartedAt.IsZero() || !got.EndAt.IsZero() || got.CreatedAt.IsZero() {
			t.Fatalf("bare sandbox = %+v, %v", got, err)
		}
		if err := s.DeleteSandbox(ctx, "sbx1"); err != nil {
			t.Fatalf("delete: %v", err)
		}
		if _, err := s.GetSandbox(ctx, "a", "sbx1"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("get after delete: %v", err)
		}
		// The metadata went with it: the same ID can be created afresh.
		if err := s.CreateSandbox(ctx, newSandbox("sbx1", "a", 0)); err != nil {
			t.Fatalf("re-create: %v", err)
		}
		if got, _ := s.GetSandbox(ctx, "a", "sbx1"); len(got.Metadata) != 1 {
			t.Fatalf("metadata after re-create = %v", got.Metadata)
		}
	})
}

// sameSandbox compares two sandboxes, times by instant.
func sameSandbox(a, b Sandbox) bool {
	times := func(s *Sandbox) []time.Time { return []time.Time{s.StartedAt, s.EndAt, s.CreatedAt, s.UpdatedAt} }
	ta, tb := times(&a), times(&b)
	for i := range ta {
		if !ta[i].Equal(tb[i]) {
			return false
		}
	}
	a.StartedAt, a.EndAt, a.CreatedAt, a.UpdatedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	b.StartedAt, b.EndAt, b.CreatedAt, b.UpdatedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	return fmt.Sprintf("%v", a) == fmt.Sprintf("%v", b) // maps print sorted
}

func ids(sbs []Sandbox) []string {
	out := make([]string, len(sbs))
	for i, s := range sbs {
		out[i] = s.ID
	}
	return out
}

func TestListSandboxes(t *testing.T) {
	eachDB(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		mustTeam(t, s, "a")
		mustTeam(t, s, "b")
		// 25 sandboxes of team a: states cycle running/paused/stopped,
		// metadata parity=even|odd and n=i; two share a creation time to
		// exercise the ID tie-break. Team b has one on host h2.
		var all []string
		for i := range 25 {
			sb := newSandbox(fmt.Sprintf("a%02d", i), "a", i)
			sb.State = []SandboxState{SandboxRunning, SandboxPaused, SandboxStopped}[i%3]
			sb.Metadata["parity"] = []string{"even", "odd"}[i%2]
			sb.TemplateID, sb.Alias = "tpl-"+sb.Metadata["parity"], sb.Metadata["parity"]
			sb.StartedAt = base.Add(time.Duration(i) * time.Second)
			if i == 11 {
				sb.CreatedAt = base.Add(10 * time.Millisecond)
			}
			if err := s.CreateSandbox(ctx, sb); err != nil {
				t.Fatalf("create: %v", err)
			}
			all = append(all, sb.ID)
		}
		other := newSandbox("b00", "b", 5)
		other.HostID = "h2"
		if err := s.CreateSandbox(ctx, other); err != nil {
			t.Fatalf("create: %v", err)
		}
		cases := []struct {
			name string
			f    SandboxFilter
			want []string
		}{
			{"team b", SandboxFilter{TeamID: "b"}, []string{"b00"}},
			{"host h2", SandboxFilter{HostID: "h2"}, []string{"b00"}},
			{"paused", SandboxFilter{TeamID: "a", States: []SandboxState{SandboxPaused}},
				[]string{"a01", "a04", "a07", "a10", "a13", "a16", "a19", "a22"}},
			{"running or stopped, odd", SandboxFilter{TeamID: "a", States: []SandboxState{SandboxRunning, SandboxStopped},
				Metadata: map[string]string{"parity": "odd"}}, []string{"a03", "a05", "a09", "a11", "a15", "a17", "a21", "a23"}},
			{"two pairs", SandboxFilter{TeamID: "a", Metadata: map[string]string{"parity": "even", "n": "12"}}, []string{"a12"}},
			{"pairs conflict", SandboxFilter{TeamID: "a", Metadata: map[string]string{"parity": "odd", "n": "12"}}, nil},
			{"unknown key", SandboxFilter{TeamID: "a", Metadata: map[string]string{"nope": "x"}}, nil},
			{"other team's metadata", SandboxFilter{TeamID: "b", Metadata: map[string]string{"parity": "even"}}, nil},
			{"newest first", SandboxFilter{TeamID: "a", States: []SandboxState{SandboxPaused}, Order: NewestFirst},
				[]string{"a22", "a19", "a16", "a13", "a10", "a07", "a04", "a01"}},
			{"started after", SandboxFilter{TeamID: "a", StartedAfter: base.Add(20 * time.Second)}, []string{"a20", "a21", "a22", "a23", "a24"}},
			{"started at", SandboxFilter{TeamID: "a", StartedAfter: base.Add(24 * time.Second)}, []string{"a24"}},
			{"started after all", SandboxFilter{TeamID: "a", StartedAfter: base.Add(25 * time.Second)}, nil},
			{"template by ID", SandboxFilter{TeamID: "a", Template: "tpl-even", Metadata: map[string]string{"n": "4"}}, []string{"a04"}},
			{"template by alias", SandboxFilter{TeamID: "a", Template: "even", States: []SandboxState{SandboxPaused}},
				[]string{"a04", "a10", "a16", "a22"}},
			{"unknown template", SandboxFilter{TeamID: "a", Template: "base"}, nil},
		}
		for _, c := range cases {
			got, next, err := s.ListSandboxes(ctx, c.f)
			if err != nil || next != "" || !slices.Equal(ids(got), c.want) {
				t.Errorf("%s: got %v next %q err %v, want %v", c.name, ids(got), next, err, c.want)
			}
			// The count is of every page, whatever the page's size.
			f := c.f
			f.Limit = 1
			if n, err := s.CountSandboxes(ctx, f); err != nil || n != len(c.want) {
				t.Errorf("%s: count %d, %v; want %d", c.name, n, err, len(c.want))
			}
		}

		// Three pages of 10, 10 and 5: every sandbox once, in order.
		var seen []string
		var tokens []string
		token := ""
		for page := 0; ; page++ {
			got, next, err := s.ListSandboxes(ctx, SandboxFilter{TeamID: "a", Limit: 10, NextToken: token})
			if err != nil {
				t.Fatalf("page %d: %v", page, err)
			}
			for _, sb := range got {
				if sb.Metadata["n"] == "" || sb.EnvVars["FOO"] != "bar" {
					t.Fatalf("page %d: %s lacks metadata or env: %+v", page, sb.ID, sb)
				}
			}
			seen = append(seen, ids(got)...)
			if next == "" {
				if page != 2 {
					t.Fatalf("last page is %d, want 2", page)
				}
				break
			}
			tokens = append(tokens, next)
			token = next
		}
		want := slices.Clone(all)
		// a11 shares a10's creation time and sorts after it by ID, then a12.
		if !slices.Equal(seen, want) {
			t.Fatalf("pages = %v, want %v", seen, want)
		}
		// A token names a position: re-using it gives the same page, and it
		// survives a deletion before it and an insertion after it.
		if err := s.DeleteSandbox(ctx, "a03"); err != nil {
			t.Fatalf("delete: %v", err)
		}
		if err := s.CreateSandbox(ctx, newSandbox("a99", "a", 99)); err != nil {
			t.Fatalf("create: %v", err)
		}
		got, _, err := s.ListSandboxes(ctx, SandboxFilter{TeamID: "a", Limit: 10, NextToken: tokens[0]})
		if err != nil || !slices.Equal(ids(got), all[10:20]) {
			t.Fatalf("page 2 again = %v, %v; want %v", ids(got), err, all[10:20])
		}
		// Newest first: the same pages backwards, and a token of one
		// direction is refused in the other.
		seen, token = nil, ""
		for {
			got, next, err := s.ListSandboxes(ctx, SandboxFilter{TeamID: "a", Limit: 7, NextToken: token, Order: NewestFirst})
			if err != nil {
				t.Fatalf("newest first: %v", err)
			}
			seen = append(seen, ids(got)...)
			if next == "" {
				break
			}
			token = next
		}
		want = slices.Clone(all)
		want = slices.DeleteFunc(want, func(id string) bool { return id == "a03" })
		want = append(want, "a99")
		slices.Reverse(want)
		if !slices.Equal(seen, want) {
			t.Fatalf("newest-first pages = %v, want %v", seen, want)
		}
		if _, _, err := s.ListSandboxes(ctx, SandboxFilter{TeamID: "a", NextToken: tokens[0], Order: NewestFirst}); !errors.Is(err, errdefs.ErrInvalid) {
			t.Fatalf("oldest-first token read newest first: %v, want errdefs.ErrInvalid", err)
		}
		// A token survives its sandbox changing state: paging running and
		// paused sandboxes, the next page is the same after the first
		// page's last sandbox and a later one are paused.
		both := []SandboxState{SandboxRunning, SandboxPaused}
		first, next, err := s.ListSandboxes(ctx, SandboxFilter{TeamID: "a", States: both, Limit: 3, Order: NewestFirst})
		if err != nil || next == "" {
			t.Fatalf("first page: %v, %q, %v", ids(first), next, err)
		}
		before, _, err := s.ListSandboxes(ctx, SandboxFilter{TeamID: "a", States: both, Limit: 3, Order: NewestFirst, NextToken: next})
		if err != nil {
			t.Fatalf("second page: %v", err)
		}
		for _, id := range []string{first[2].ID, before[0].ID} {
			if _, err := s.UpdateSandbox(ctx, id, func(sb *Sandbox) error { sb.State = SandboxPaused; return nil }); err != nil {
				t.Fatalf("pause %s: %v", id, err)
			}
		}
		after, _, err := s.ListSandboxes(ctx, SandboxFilter{TeamID: "a", States: both, Limit: 3, Order: NewestFirst, NextToken: next})
		if err != nil || !slices.Equal(ids(after), ids(before)) {
			t.Fatalf("second page after pausing = %v, %v; want %v", ids(after), err, ids(before))
		}
		if _, _, err := s.ListSandboxes(ctx, SandboxFilter{Order: Order(7)}); !errors.Is(err, errdefs.ErrInvalid) {
			t.Fatalf("order 7: %v, want errdefs.ErrInvalid", err)
		}
		// Limits: the default and the cap.
		if got, _, err := s.ListSandboxes(ctx, SandboxFilter{Limit: 5000}); err != nil || len(got) != 26 {
			t.Fatalf("limit 5000 → %d sandboxes, %v", len(got), err)
		}
		for _, bad := range []string{"!!!", "bm90LWEtdG9rZW4", "MTIz", "eC55"} {
			if _, _, err := s.ListSandboxes(ctx, SandboxFilter{NextToken: bad}); !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("token %q: %v, want errdefs.ErrInvalid", bad, err)
			}
		}
	})
}

// TestSandboxStatuses: a host's sandboxes in the states asked, each with
// its record's state and times; other hosts' and other states' are left
// out.
func TestSandboxStatuses(t *testing.T) {
	eachDB(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		mustTeam(t, s, "a")
		want := map[string]Sandbox{}
		for i, st := range []SandboxState{SandboxRunning, SandboxPaused, SandboxStopped, SandboxStarting, SandboxRunning} {
			sb := newSandbox(fmt.Sprintf("s%d", i), "a", i)
			sb.State = st
			if i == 3 {
				sb.EndAt = time.Time{} // never
			}
			if i == 4 {
				sb.HostID = "h2"
			}
			if err := s.CreateSandbox(ctx, sb); err != nil {
				t.Fatal(err)
			}
			if sb.HostID == "h1" && st != SandboxStopped {
				got, err := s.LookupSandbox(ctx, sb.ID)
				if err != nil {
					t.Fatal(err)
				}
				want[sb.ID] = got
			}
		}
		got, err := s.SandboxStatuses(ctx, "h1", SandboxStarting, SandboxRunning, SandboxPaused)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("got %v, want %d statuses", got, len(want))
		}
		for _, st := range got {
			w, ok := want[st.ID]
			if !ok || st.State != w.State || !st.EndAt.Equal(w.EndAt) || !st.CreatedAt.Equal(w.CreatedAt) || !st.UpdatedAt.Equal(w.UpdatedAt) {
				t.Errorf("status %+v, want of %+v", st, w)
			}
		}
		if _, err := s.SandboxStatuses(ctx, "h1"); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("no states: %v, want invalid", err)
		}
	})
}

func TestUpdateSandbox(t *testing.T) {
	eachDB(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		mustTeam(t, s, "a")
		if err := s.CreateSandbox(ctx, newSandbox("sbx", "a", 0)); err != nil {
			t.Fatalf("create: %v", err)
		}
		// Concurrent read-modify-writes lose nothing.
		const workers, each = 8, 10
		var wg sync.WaitGroup
		errs := make(chan error, workers*each)
		for range workers {
			wg.Go(func() {
				for range each {
					_, err := s.UpdateSandbox(ctx, "sbx", func(sb *Sandbox) error {
						sb.TimeoutSecs++
						return nil
					})
					if err != nil {
						errs <- err
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("update: %v", err)
		}
		got, _ := s.LookupSandbox(ctx, "sbx")
		if want := int64(300 + workers*each); got.TimeoutSecs != want {
			t.Fatalf("timeout after %d concurrent increments = %d, want %d", workers*each, got.TimeoutSecs, want)
		}

		// fn's error aborts the whole update.
		boom := errors.New("boom")
		if _, err := s.UpdateSandbox(ctx, "sbx", func(sb *Sandbox) error {
			sb.State = SandboxPaused
			sb.Metadata["x"] = "y"
			return boom
		}); !errors.Is(err, boom) {
			t.Fatalf("aborted update: %v, want boom", err)
		}
		if got, _ := s.LookupSandbox(ctx, "sbx"); got.State != SandboxRunning || got.Metadata["x"] != "" {
			t.Fatalf("aborted update was written: %+v", got)
		}

		end := base.Add(time.Hour)
		upd, err := s.UpdateSandbox(ctx, "sbx", func(sb *Sandbox) error {
			sb.State, sb.EndAt, sb.Error = SandboxPaused, end, ""
			sb.Metadata = map[string]string{"new": "1"}
			return nil
		})
		if err != nil || upd.State != SandboxPaused || !upd.EndAt.Equal(end) || upd.Metadata["new"] != "1" {
			t.Fatalf("update = %+v, %v", upd, err)
		}
		got, _ = s.LookupSandbox(ctx, "sbx")
		if !sameSandbox(got, upd) {
			t.Fatalf("stored\n%+v\nreturned\n%+v", got, upd)
		}
		if found, _, _ := s.ListSandboxes(ctx, SandboxFilter{Metadata: map[string]string{"n": "0"}}); len(found) != 0 {
			t.Fatalf("old metadata still matches: %v", ids(found))
		}

		// A write moves UpdatedAt forward even when the clock is behind
		// it (another replica's clock ran ahead).
		ahead := newSandbox("ahead", "a", 1)
		ahead.UpdatedAt = time.Now().Add(time.Hour).Truncate(time.Microsecond)
		if err := s.CreateSandbox(ctx, ahead); err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			upd, err := s.UpdateSandbox(ctx, "ahead", func(sb *Sandbox) error { sb.TimeoutSecs++; return nil })
			if want := ahead.UpdatedAt.Add(time.Duration(i + 1)); err != nil || !upd.UpdatedAt.Equal(want) {
				t.Fatalf("update %d with the clock behind: %v, %v; want %v", i, upd.UpdatedAt, err, want)
			}
		}

		errCases := []struct {
			name string
			id   string
			fn   func(*Sandbox) error
			want error
		}{
			{"unknown", "nope", func(*Sandbox) error { return nil }, errdefs.ErrNotFound},
			{"change id", "sbx", func(sb *Sandbox) error { sb.ID = "other"; return nil }, errdefs.ErrInvalid},
			{"bad state", "sbx", func(sb *Sandbox) error { sb.State = ""; return nil }, errdefs.ErrInvalid},
		}
		for _, c := range errCases {
			if _, err := s.UpdateSandbox(ctx, c.id, c.fn); !errors.Is(err, c.want) {
				t.Errorf("%s: %v, want %v", c.name, err, c.want)
			}
		}
	})
}

func TestExpiredSandboxes(t *testing.T) {
	eachDB(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		mustTeam(t, s, "a")
		for i, c := range []struct {
			id    string
			state SandboxState
			end   time.Duration // after base; 0 = never
		}{
			{"e1", SandboxRunning, time.Minute},
			{"e2", SandboxRunning, 2 * time.Minute},
			{"e3", SandboxPaused, 30 * time.Second},
			{"e4", SandboxRunning, time.Hour},
			{"e5", SandboxRunning, 0},
		} {
			sb := newSandbox(c.id, "a", i)
			sb.State, sb.EndAt = c.state, time.Time{}
			if c.end != 0 {
				sb.EndAt = base.Add(c.end)
			}
			if err := s.CreateSandbox(ctx, sb); err != nil {
				t.Fatalf("create: %v", err)
			}
		}
		cases := []struct {
			name   string
			now    time.Time
			states []SandboxState
			want   []string
		}{
			{"none yet", base, nil, nil},
			{"running at 2m (inclusive)", base.Add(2 * time.Minute), []SandboxState{SandboxRunning}, []string{"e1", "e2"}},
			{"any state at 2m", base.Add(2 * time.Minute), nil, []string{"e3", "e1", "e2"}},
			{"running or paused much later", base.Add(24 * time.Hour), []SandboxState{SandboxRunning, SandboxPaused},
				[]string{"e3", "e1", "e2", "e4"}},
			{"stopped", base.Add(24 * time.Hour), []SandboxState{SandboxStopped}, nil},
		}
		for _, c := range cases {
			got, err := s.ExpiredSandboxes(ctx, c.now, c.states...)
			if err != nil || !slices.Equal(ids(got), c.want) {
				t.Errorf("%s: got %v, %v; want %v", c.name, ids(got), err, c.want)
			}
		}
	})
}

// TestStopExpired: the running sandboxes past their timeout that do not
// pause then are claimed, soonest first, at most the limit; the others
// are left as they are.
func TestStopExpired(t *testing.T) {
	eachDB(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		mustTeam(t, s, "a")
		for i, c := range []struct {
			id        string
			state     SandboxState
			end       time.Duration // after base; 0 = never
			autoPause bool
		}{
			{"s1", SandboxRunning, 2 * time.Minute, false},
			{"s2", SandboxRunning, time.Minute, false},
			{"s3", SandboxRunning, time.Minute, true},
			{"s4", SandboxPaused, time.Minute, false},
			{"s5", SandboxRunning, time.Hour, false},
			{"s6", SandboxRunning, 0, false},
		} {
			sb := newSandbox(c.id, "a", i)
			sb.State, sb.EndAt, sb.AutoPause = c.state, time.Time{}, c.autoPause
			if c.end != 0 {
				sb.EndAt = base.Add(c.end)
			}
			if err := s.CreateSandbox(ctx, sb); err != nil {
				t.Fatal(err)
			}
		}
		before, _ := s.LookupSandbox(ctx, "s2")
		now := base.Add(10 * time.Minute)
		got, err := s.StopExpired(ctx, now, 1)
		if err != nil || len(got) != 1 || got[0].ID != "s2" || got[0].State != SandboxStopped || got[0].Metadata["n"] != "1" ||
			!got[0].UpdatedAt.After(before.UpdatedAt) {
			t.Fatalf("first claim: %+v, %v; want s2, stopped, with its metadata", got, err)
		}
		if stored, _ := s.LookupSandbox(ctx, "s2"); !sameSandbox(stored, got[0]) {
			t.Fatalf("stored\n%+v\nreturned\n%+v", stored, got[0])
		}
		got, err = s.StopExpired(ctx, now, 10)
		if err != nil || !slices.Equal(ids(got), []string{"s1"}) {
			t.Fatalf("second claim: %v, %v; want s1", ids(got), err)
		}
		if got, err := s.StopExpired(ctx, now, 10); err != nil || len(got) != 0 {
			t.Fatalf("third claim: %v, %v; want none", ids(got), err)
		}
		for id, want := range map[string]SandboxState{"s3": SandboxRunning, "s4": SandboxPaused, "s5": SandboxRunning, "s6": SandboxRunning} {
			if sb, _ := s.LookupSandbox(ctx, id); sb.State != want {
				t.Errorf("%s: %s, want %s", id, sb.State, want)
			}
		}
		if n, err := s.DeleteSandboxes(ctx, "s1", "s2", "nope"); err != nil || n != 2 {
			t.Fatalf("delete: %d, %v; want 2", n, err)
		}
		if _, err := s.LookupSandbox(ctx, "s1"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("s1 after its delete: %v", err)
		}
		if n, err := s.DeleteSandboxes(ctx); err != nil || n != 0 {
			t.Fatalf("delete of none: %d, %v", n, err)
		}
	})
}
