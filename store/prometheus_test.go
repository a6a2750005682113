package store

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestStatementLabels(t *testing.T) {
	for _, c := range []struct{ query, op, table string }{
		{`SELECT id, name, created_at FROM teams WHERE id = $1`, "select", "teams"},
		{"\n\t  select count(*)\n FROM Sandboxes s LEFT JOIN hosts h ON h.id = s.host_id", "select", "sandboxes"},
		{`SELECT 'a from b', "from" FROM api_keys`, "select", "api_keys"},
		{`SELECT current_schema()`, "select", ""},
		{`SELECT id, COALESCE((SELECT json_group_object(key, value) FROM sandbox_metadata WHERE sandbox_id = sandboxes.id), '{}') FROM sandboxes WHERE id = $1`,
			"select", "sandboxes"},
		{`INSERT INTO hosts (token, id) VALUES ('', $1) ON CONFLICT (id) DO UPDATE SET name = excluded.name`, "insert", "hosts"},
		{`UPDATE api_keys SET name = $1 WHERE id = $2`, "update", "api_keys"},
		{`DELETE FROM sandbox_metadata WHERE sandbox_id = $1`, "delete", "sandbox_metadata"},
		{`DELETE FROM "weird table"`, "delete", ""},
		{`CREATE TABLE goose_db_version (id INTEGER)`, "other", ""},
		{`PRAGMA foreign_keys`, "other", ""},
		{`WITH x AS (SELECT 1) SELECT * FROM x`, "other", ""},
		{`INSERT INTO 9lives VALUES (1)`, "insert", ""},
		{``, "other", ""},
		{`'unterminated`, "other", ""},
	} {
		if op, table := statementLabels(c.query); op != c.op || table != c.table {
			t.Errorf("statementLabels(%q) = %q, %q; want %q, %q", c.query, op, table, c.op, c.table)
		}
	}
}

// Every statement of a store opened WithRegisterer is timed under its kind
// and table, transactions' begin and commit too; a second store on the
// same registry is refused, and one that fails to open leaves the
// registry free.
func TestStoreMetrics(t *testing.T) {
	t.Parallel()
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			reg := prometheus.NewPedanticRegistry()
			if _, err := Open(ctx, "mysql://nowhere", testLog(t), WithRegisterer(reg)); err == nil {
				t.Fatal("open of an unknown scheme succeeded")
			}
			url := b.url(t)
			s, err := Open(ctx, url, testLog(t), WithRegisterer(reg))
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			defer s.Close()
			if _, err := Open(ctx, url, testLog(t), WithRegisterer(reg)); err == nil {
				t.Fatal("a second store registered in the same registry")
			} else if !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
				t.Fatalf("second store: %v, want AlreadyRegisteredError", err)
			}

			mustTeam(t, s, "a")
			if _, err := s.GetTeam(ctx, "a"); err != nil {
				t.Fatal(err)
			}
			if err := s.UpsertHost(ctx, Host{ID: "h1", Runtime: "namespace", State: HostReady}); err != nil {
				t.Fatal(err)
			}
			for i, id := range []string{"s1", "s2", "s3"} {
				sb := newSandbox(id, "a", i)
				if id == "s3" {
					sb.HostID, sb.State = "gone", SandboxPaused
				}
				if err := s.CreateSandbox(ctx, sb); err != nil {
					t.Fatal(err)
				}
			}
			counts, err := s.SandboxCounts(ctx)
			if err != nil {
				t.Fatal(err)
			}
			want := []SandboxCount{{HostID: "gone", State: SandboxPaused, N: 1, VCPUs: 2, MemoryMB: 512},
				{HostID: "h1", State: SandboxRunning, N: 2, VCPUs: 4, MemoryMB: 1024}}
			if !slices.Equal(counts, want) {
				t.Errorf("sandbox counts %+v, want %+v", counts, want)
			}

			families, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			seen := map[[2]string]uint64{}
			for _, f := range families {
				if f.GetName() != "roost_store_query_duration_seconds" {
					t.Errorf("unexpected metric %s", f.GetName())
					continue
				}
				for _, m := range f.GetMetric() {
					var op, table string
					for _, l := range m.GetLabel() {
						switch l.GetName() {
						case "op":
							op = l.GetValue()
						case "table":
							table = l.GetValue()
						}
					}
					seen[[2]string{op, table}] += m.GetHistogram().GetSampleCount()
				}
			}
			for _, k := range [][2]string{{"insert", "teams"}, {"select", "teams"}, {"insert", "hosts"}, {"insert", "sandboxes"},
				{"insert", "sandbox_metadata"}, {"begin", ""}, {"commit", ""}, {"select", "sandboxes"}} {
				if seen[k] == 0 {
					t.Errorf("no statement timed as %q on %q; seen %v", k[0], k[1], seen)
				}
			}
		})
	}
}
