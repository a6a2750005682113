package store

import (
	"context"
	"errors"
	"testing"

	"roost.dev/roost/errdefs"
)

func TestPutSnapshot(t *testing.T) {
	eachDB(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		mustTeam(t, s, "a")
		mustTeam(t, s, "b")
		mustTemplate(t, s, "t1", "a", "web", false)
		snap := func(id, team, name, sandbox, build string, manifest byte) (Template, error) {
			return s.PutSnapshot(ctx, Template{ID: id, TeamID: team, Name: name, SnapshotOf: sandbox},
				TemplateBuild{ID: build, Manifest: digestOf(manifest), SizeBytes: 10, Tags: []string{"default"}})
		}
		got, err := snap("s1", "a", "snap", "sb1", "b1", '1')
		if err != nil || got.ID != "s1" || got.SnapshotOf != "sb1" || got.CreatedAt.IsZero() {
			t.Fatalf("first snapshot = %+v, %v", got, err)
		}
		b, err := s.TaggedBuild(ctx, "s1", "default")
		if err != nil || b.ID != "b1" || b.Status != BuildReady || b.Manifest != digestOf('1') {
			t.Fatalf("its default tag = %+v, %v", b, err)
		}
		// The same name again: a new build of the same template, of the
		// sandbox it was taken of now.
		got, err = snap("s2", "a", "snap", "sb2", "b2", '2')
		if err != nil || got.ID != "s1" || got.SnapshotOf != "sb2" {
			t.Fatalf("second snapshot of the name = %+v, %v", got, err)
		}
		if b, err := s.TaggedBuild(ctx, "s1", "default"); err != nil || b.ID != "b2" {
			t.Fatalf("default tag after the second = %+v, %v", b, err)
		}
		if builds, err := s.ListBuilds(ctx, "s1"); err != nil || len(builds) != 2 {
			t.Fatalf("builds = %d, %v", len(builds), err)
		}
		// A name of a template that is no snapshot, or another team's.
		for _, c := range []struct{ team, name string }{{"a", "web"}, {"b", "snap"}} {
			if _, err := snap("s3", c.team, c.name, "sb3", "b3", '3'); !errors.Is(err, errdefs.ErrConflict) {
				t.Fatalf("team %s, name %s: %v, want ErrConflict", c.team, c.name, err)
			}
		}
		if _, err := snap("s4", "a", "", "sb4", "b4", '4'); !errors.Is(err, errdefs.ErrInvalid) {
			t.Fatalf("no name: %v, want ErrInvalid", err)
		}
		if got, err := s.GetTemplate(ctx, "web"); err != nil || got.SnapshotOf != "" {
			t.Fatalf("a template = %+v, %v", got, err)
		}
	})
}
