package template

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// staleBase puts a base without a recipe (as roost made it before
// recipes were recorded) into s, with a marker file in its tree.
func staleBase(t *testing.T, s *Store) {
	t.Helper()
	if err := os.MkdirAll(s.Dir(), storePerm); err != nil {
		t.Fatal(err)
	}
	_, err := s.create(t.Context(), BaseName, func(_ context.Context, build string) (Template, error) {
		rootfs := filepath.Join(build, rootfsDir)
		if err := os.MkdirAll(rootfs, 0o755); err != nil {
			return Template{}, err
		}
		return Template{Source: SourceDebootstrap, DefaultUser: baseUser, Workdir: baseHome}, os.WriteFile(filepath.Join(rootfs, "old"), nil, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestEnsureBaseReplacesStale(t *testing.T) {
	s := newTestStore(t)
	stub := newStubBase(s)
	staleBase(t, s)
	old, err := s.Get(BaseName)
	if err != nil || IsCurrentBase(old) {
		t.Fatalf("stale base = %+v, %v", old, err)
	}

	// A failed rebuild keeps the stale base.
	stub.release <- errors.New("mirror on fire")
	if _, err := s.EnsureBase(t.Context(), nil); err == nil || !strings.Contains(err.Error(), "mirror on fire") {
		t.Fatalf("EnsureBase = %v, want the build's error", err)
	}
	<-stub.started
	if got, err := s.Get(BaseName); err != nil || !got.Created.Equal(old.Created) {
		t.Fatalf("base after a failed rebuild = %+v, %v; want the stale one", got, err)
	}

	w := newLineWatcher("made by an older roost")
	stub.release <- nil
	got, err := s.EnsureBase(t.Context(), w)
	<-stub.started
	if err != nil || !IsCurrentBase(got) {
		t.Fatalf("EnsureBase = %+v, %v; want a current base", got, err)
	}
	if _, err := os.Stat(filepath.Join(got.RootFS, "old")); err == nil {
		t.Error("the new base has the old tree's files")
	}
	if !strings.Contains(w.String(), "made by an older roost") {
		t.Errorf("progress = %q, want it to say why base is rebuilt", w.String())
	}
	// The old tree waits in the trash, whole, for sandboxes made from it.
	trash, _ := filepath.Glob(filepath.Join(s.Dir(), trashPrefix(BaseName)+"*", BaseName, rootfsDir, "old"))
	if len(trash) != 1 {
		t.Errorf("old tree in the trash: %v, want its files kept", trash)
	}
	if again, err := s.EnsureBase(t.Context(), nil); err != nil || !again.Created.Equal(got.Created) || stub.calls.Load() != 2 {
		t.Errorf("EnsureBase of a current base = %+v, %v, builds %d; want no build", again, err, stub.calls.Load())
	}
	if err := s.Remove(BaseName); err != nil {
		t.Fatal(err)
	}
	if left := storeEntries(t, s); len(left) != 0 {
		t.Errorf("store after Remove holds %v, want nothing (the trash emptied)", left)
	}
}
