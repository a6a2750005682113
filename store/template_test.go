package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/errdefs"
)

func digestOf(c byte) string { return "sha256:" + strings.Repeat(string(c), 64) }

func mustTemplate(t *testing.T, s Store, id, team, name string, public bool) {
	t.Helper()
	if err := s.CreateTemplate(context.Background(), Template{ID: id, TeamID: team, Name: name, Public: public, CreatedAt: base}); err != nil {
		t.Fatalf("create template %s: %v", name, err)
	}
}

func mustBuild(t *testing.T, s Store, tmpl, id string, tags ...string) {
	t.Helper()
	b := TemplateBuild{ID: id, TemplateID: tmpl, Status: BuildWaiting, Tags: tags, CPUs: 2, MemoryMB: 1024, CreatedAt: base}
	if err := s.CreateBuild(context.Background(), b); err != nil {
		t.Fatalf("create build %s: %v", id, err)
	}
}

func TestTemplates(t *testing.T) {
	eachDB(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		mustTeam(t, s, "a")
		mustTeam(t, s, "b")
		mustTemplate(t, s, "t1", "a", "web", false)
		mustTemplate(t, s, "t2", "b", "shared", true)
		mustTemplate(t, s, "t3", "b", "secret", false)
		if err := s.CreateTemplate(ctx, Template{ID: "t4", TeamID: "a", Name: "web"}); !errors.Is(err, errdefs.ErrConflict) {
			t.Fatalf("a taken name: %v, want ErrConflict", err)
		}
		if err := s.CreateTemplate(ctx, Template{ID: "t4", TeamID: "nope", Name: "x"}); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("an unknown team: %v, want ErrNotFound", err)
		}
		for _, key := range []string{"t1", "web"} {
			got, err := s.GetTemplate(ctx, key)
			if err != nil || got.ID != "t1" || got.TeamID != "a" || got.Name != "web" || got.Public || !got.CreatedAt.Equal(base) {
				t.Fatalf("get %q = %+v, %v", key, got, err)
			}
		}
		if _, err := s.GetTemplate(ctx, "nothing"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("get unknown: %v", err)
		}
		// A name that is another template's ID names that one.
		mustTemplate(t, s, "t5", "a", "t1", false)
		if got, err := s.GetTemplate(ctx, "t1"); err != nil || got.ID != "t1" {
			t.Fatalf("get t1 with a template named t1: %+v, %v", got, err)
		}
		if _, _, err := s.DeleteTemplate(ctx, "t5"); err != nil {
			t.Fatal(err)
		}
		list, err := s.ListTemplates(ctx, "a")
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, tm := range list {
			names = append(names, tm.Name)
		}
		if !slices.Equal(names, []string{"shared", "web"}) {
			t.Fatalf("team a sees %q, want its own and the public one", names)
		}
		if got, err := s.SetTemplatePublic(ctx, "t3", true); err != nil || !got.Public {
			t.Fatalf("set public = %+v, %v", got, err)
		}
		if _, err := s.SetTemplatePublic(ctx, "nope", true); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("set public of unknown: %v", err)
		}
	})
}

func TestBuildLifecycle(t *testing.T) {
	eachDB(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		mustTeam(t, s, "a")
		mustTemplate(t, s, "t1", "a", "web", false)
		mustBuild(t, s, "t1", "b1", "v1", "default")
		if err := s.CreateBuild(ctx, TemplateBuild{ID: "bx", TemplateID: "nope", Status: BuildWaiting}); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("build of unknown template: %v", err)
		}
		got, err := s.GetBuild(ctx, "t1", "b1")
		if err != nil || got.Status != BuildWaiting || !slices.Equal(got.Tags, []string{"v1", "default"}) || got.CPUs != 2 || got.MemoryMB != 1024 {
			t.Fatalf("get build = %+v, %v", got, err)
		}
		if _, err := s.GetBuild(ctx, "t2", "b1"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("build under another template: %v", err)
		}
		if _, err := s.FinishBuild(ctx, "b1", digestOf('a'), 10); !errors.Is(err, errdefs.ErrConflict) {
			t.Fatalf("finish a waiting build: %v, want ErrConflict", err)
		}
		spec := json.RawMessage(`{"stages":[]}`)
		lease := time.Now().Add(time.Minute)
		if got, err = s.StartBuild(ctx, "t1", "b1", spec, "h1", lease); err != nil || got.Status != BuildBuilding || got.HostID != "h1" || string(got.Spec) != string(spec) {
			t.Fatalf("start = %+v, %v", got, err)
		}
		if _, err := s.StartBuild(ctx, "t1", "b1", spec, "h1", lease); !errors.Is(err, errdefs.ErrConflict) {
			t.Fatalf("start twice: %v, want ErrConflict", err)
		}
		if _, err := s.StartBuild(ctx, "t1", "b9", spec, "h1", lease); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("start unknown: %v, want ErrNotFound", err)
		}
		if _, err := s.FinishBuild(ctx, "b1", "sha256:nothex", 10); !errors.Is(err, errdefs.ErrInvalid) {
			t.Fatalf("finish with a bad digest: %v", err)
		}
		if got, err = s.FinishBuild(ctx, "b1", digestOf('a'), 10); err != nil || got.Status != BuildReady || got.Manifest != digestOf('a') ||
			got.SizeBytes != 10 || got.FinishedAt.IsZero() {
			t.Fatalf("finish = %+v, %v", got, err)
		}
		if _, err := s.FailBuild(ctx, "b1", BuildReason{Message: "late"}); !errors.Is(err, errdefs.ErrConflict) {
			t.Fatalf("fail a ready build: %v, want ErrConflict", err)
		}
		tags, err := s.Tags(ctx, "t1")
		if err != nil || len(tags) != 2 || tags[0].Tag != "default" || tags[1].Tag != "v1" || tags[0].BuildID != "b1" {
			t.Fatalf("tags after finish = %+v, %v", tags, err)
		}
		if b, err := s.TaggedBuild(ctx, "t1", "default"); err != nil || b.ID != "b1" || b.Manifest != digestOf('a') {
			t.Fatalf("tagged build = %+v, %v", b, err)
		}

		// A second build that fails leaves the tags where they were.
		mustBuild(t, s, "t1", "b2")
		if _, err := s.StartBuild(ctx, "t1", "b2", spec, "h1", lease); err != nil {
			t.Fatal(err)
		}
		reason := BuildReason{Message: "exit 2", Step: "3", LogEntries: []BuildLogEntry{{Time: base, Level: "error", Step: "3", Message: "boom"}}}
		if got, err = s.FailBuild(ctx, "b2", reason); err != nil || got.Status != BuildError || got.Reason == nil ||
			got.Reason.Step != "3" || len(got.Reason.LogEntries) != 1 || !got.Reason.LogEntries[0].Time.Equal(base) {
			t.Fatalf("fail = %+v, %v", got, err)
		}
		if b, _ := s.TaggedBuild(ctx, "t1", "default"); b.ID != "b1" {
			t.Fatalf("a failed build moved the tag to %s", b.ID)
		}
		if err := s.SetTags(ctx, "t1", "b2", []string{"x"}); !errors.Is(err, errdefs.ErrInvalid) {
			t.Fatalf("tag a failed build: %v, want ErrInvalid", err)
		}
		if err := s.SetTags(ctx, "t1", "b1", []string{"x", "x", "y"}); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteTags(ctx, "t1", []string{"x", "nope"}); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("delete an absent tag: %v", err)
		}
		if _, err := s.TaggedBuild(ctx, "t1", "x"); err != nil {
			t.Fatalf("a refused delete removed a tag: %v", err)
		}
		if err := s.DeleteTags(ctx, "t1", []string{"x", "y"}); err != nil {
			t.Fatal(err)
		}
		builds, err := s.ListBuilds(ctx, "t1")
		if err != nil || len(builds) != 2 {
			t.Fatalf("list builds = %d, %v", len(builds), err)
		}
		if m, err := s.ReadyManifests(ctx); err != nil || !slices.Equal(m, []string{digestOf('a')}) {
			t.Fatalf("ready manifests = %q, %v", m, err)
		}
	})
}

func TestAbandonedBuilds(t *testing.T) {
	eachDB(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		mustTeam(t, s, "a")
		mustTemplate(t, s, "t1", "a", "web", false)
		now := time.Now()
		for i, lease := range []time.Time{now.Add(-time.Second), now.Add(time.Minute)} {
			id := fmt.Sprintf("b%d", i)
			mustBuild(t, s, "t1", id)
			if _, err := s.StartBuild(ctx, "t1", id, json.RawMessage(`{}`), "h", lease); err != nil {
				t.Fatal(err)
			}
		}
		mustBuild(t, s, "t1", "waiting")
		failed, err := s.FailAbandonedBuilds(ctx, now, BuildReason{Message: "the control plane restarted during the build"})
		if err != nil || len(failed) != 1 || failed[0].ID != "b0" {
			t.Fatalf("abandoned = %+v, %v; want b0 only", failed, err)
		}
		if b, _ := s.GetBuild(ctx, "t1", "b0"); b.Status != BuildError || b.Reason.Message == "" {
			t.Fatalf("b0 = %+v", b)
		}
		if err := s.RenewBuildLeases(ctx, []string{"b1"}, now.Add(-time.Second)); err != nil {
			t.Fatal(err)
		}
		if failed, _ := s.FailAbandonedBuilds(ctx, now, BuildReason{Message: "gone"}); len(failed) != 1 || failed[0].ID != "b1" {
			t.Fatalf("after its lease ran out: %+v", failed)
		}
		if b, _ := s.GetBuild(ctx, "t1", "waiting"); b.Status != BuildWaiting {
			t.Fatalf("a waiting build became %s", b.Status)
		}
	})
}

func TestBuildLog(t *testing.T) {
	eachDB(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		mustTeam(t, s, "a")
		mustTemplate(t, s, "t1", "a", "web", false)
		mustBuild(t, s, "t1", "b1")
		levels := []string{"debug", "info", "warn", "error"}
		var entries []BuildLogEntry
		for i := range 8 {
			entries = append(entries, BuildLogEntry{Time: base.Add(time.Duration(i) * time.Second), Level: levels[i%4], Step: "1", Message: fmt.Sprint("m", i)})
		}
		if err := s.AppendBuildLog(ctx, "b1", entries[:5]); err != nil {
			t.Fatal(err)
		}
		if err := s.AppendBuildLog(ctx, "b1", entries[5:]); err != nil {
			t.Fatal(err)
		}
		if err := s.AppendBuildLog(ctx, "b1", []BuildLogEntry{{Level: "loud"}}); !errors.Is(err, errdefs.ErrInvalid) {
			t.Fatalf("bad level: %v", err)
		}
		if err := s.AppendBuildLog(ctx, "nope", entries[:1]); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("unknown build: %v", err)
		}
		messages := func(f BuildLogFilter) string {
			t.Helper()
			got, err := s.BuildLog(ctx, "b1", f)
			if err != nil {
				t.Fatal(err)
			}
			var m []string
			for _, e := range got {
				m = append(m, e.Message)
			}
			return strings.Join(m, ",")
		}
		for _, c := range []struct {
			f    BuildLogFilter
			want string
		}{
			{BuildLogFilter{}, "m0,m1,m2,m3,m4,m5,m6,m7"},
			{BuildLogFilter{Offset: 6}, "m6,m7"},
			{BuildLogFilter{Offset: 2, Limit: 3}, "m2,m3,m4"},
			{BuildLogFilter{MinLevel: "warn"}, "m2,m3,m6,m7"},
			{BuildLogFilter{MinLevel: "warn", Offset: 1, Limit: 2}, "m3,m6"},
			{BuildLogFilter{Cursor: base.Add(5 * time.Second)}, "m5,m6,m7"},
			{BuildLogFilter{Cursor: base.Add(2 * time.Second), Backward: true}, "m2,m1,m0"},
			{BuildLogFilter{Backward: true, Limit: 2}, "m7,m6"},
		} {
			if got := messages(c.f); got != c.want {
				t.Errorf("log %+v = %s, want %s", c.f, got, c.want)
			}
		}
		if _, err := s.BuildLog(ctx, "b1", BuildLogFilter{MinLevel: "loud"}); !errors.Is(err, errdefs.ErrInvalid) {
			t.Fatalf("bad level filter: %v", err)
		}
	})
}

func TestBuildLogIsBounded(t *testing.T) {
	eachDB(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		mustTeam(t, s, "a")
		mustTemplate(t, s, "t1", "a", "web", false)
		mustBuild(t, s, "t1", "b1")
		batch := make([]BuildLogEntry, 2500)
		for i := range batch {
			batch[i] = BuildLogEntry{Time: base, Level: "info", Message: "line"}
		}
		for range 5 { // 12 500 entries
			if err := s.AppendBuildLog(ctx, "b1", batch); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.BuildLog(ctx, "b1", BuildLogFilter{})
		if err != nil || len(got) != MaxBuildLogEntries {
			t.Fatalf("kept %d entries, %v; want %d", len(got), err, MaxBuildLogEntries)
		}
		last := got[len(got)-1]
		if want := "2501 more log entries were dropped"; !strings.HasPrefix(last.Message, want) || last.Level != "warn" {
			t.Fatalf("last entry %+v, want %q…", last, want)
		}
	})
}

func TestTemplateFilesAndDelete(t *testing.T) {
	eachDB(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		mustTeam(t, s, "a")
		mustTemplate(t, s, "t1", "a", "web", false)
		mustTemplate(t, s, "t2", "a", "api", false)
		f := TemplateFile{TeamID: "a", Hash: "h1", TemplateID: "t1", Digest: digestOf('1'), SizeBytes: 5}
		if err := s.PutTemplateFile(ctx, f); err != nil {
			t.Fatal(err)
		}
		if err := s.PutTemplateFile(ctx, TemplateFile{TeamID: "a", Hash: "h2", TemplateID: "t2", Digest: digestOf('2')}); err != nil {
			t.Fatal(err)
		}
		if err := s.PutTemplateFile(ctx, TemplateFile{TeamID: "a", Hash: "h3", Digest: "md5:x"}); !errors.Is(err, errdefs.ErrInvalid) {
			t.Fatalf("bad digest: %v", err)
		}
		if got, err := s.TemplateFile(ctx, "a", "h1"); err != nil || got.Digest != f.Digest || got.SizeBytes != 5 {
			t.Fatalf("file = %+v, %v", got, err)
		}
		if _, err := s.TemplateFile(ctx, "b", "h1"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("another team's file: %v", err)
		}
		mustBuild(t, s, "t1", "b1")
		if _, err := s.StartBuild(ctx, "t1", "b1", json.RawMessage(`{}`), "h", time.Now().Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if err := s.AppendBuildLog(ctx, "b1", []BuildLogEntry{{Level: "info", Message: "x"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.FinishBuild(ctx, "b1", digestOf('a'), 1); err != nil {
			t.Fatal(err)
		}
		builds, files, err := s.DeleteTemplate(ctx, "t1")
		if err != nil || len(builds) != 1 || builds[0].Manifest != digestOf('a') || len(files) != 1 || files[0].Digest != digestOf('1') {
			t.Fatalf("delete = %+v, %+v, %v", builds, files, err)
		}
		if _, err := s.GetTemplate(ctx, "t1"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("deleted template: %v", err)
		}
		if _, err := s.TemplateFile(ctx, "a", "h1"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("the deleted template's file: %v", err)
		}
		if d, err := s.FileDigests(ctx); err != nil || !slices.Equal(d, []string{digestOf('2')}) {
			t.Fatalf("file digests = %q, %v", d, err)
		}
		if m, err := s.ReadyManifests(ctx); err != nil || len(m) != 0 {
			t.Fatalf("ready manifests after delete = %q, %v", m, err)
		}
		if _, _, err := s.DeleteTemplate(ctx, "t1"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("delete twice: %v", err)
		}
	})
}

func TestEnsureSecret(t *testing.T) {
	eachDB(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		first, err := s.EnsureSecret(ctx, "files", []byte("one"))
		if err != nil || string(first) != "one" {
			t.Fatalf("first = %q, %v", first, err)
		}
		if again, err := s.EnsureSecret(ctx, "files", []byte("two")); err != nil || string(again) != "one" {
			t.Fatalf("second = %q, %v; want the first kept", again, err)
		}
	})
}
