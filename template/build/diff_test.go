package build

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"roost.dev/roost/template"
)

// TestLayerOfDiff: the layer of a tree's changes, applied over the tree it
// changed, makes the changed tree (added, rewritten and removed files, a
// file made a directory, a new symlink), and leaves out what it skips.
func TestLayerOfDiff(t *testing.T) {
	lower, upper := t.TempDir(), t.TempDir()
	old := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	write := func(root, rel, body string) {
		t.Helper()
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	for _, root := range []string{lower, upper} {
		write(root, "etc/keep", "same")
		write(root, "etc/edit", "before")
		write(root, "gone/file", "x")
		write(root, "becomes-dir", "x")
		write(root, "etc/hostname", "runtime's")
	}
	if err := os.RemoveAll(filepath.Join(upper, "gone")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(upper, "etc/edit"), []byte("after!"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(upper, "becomes-dir")); err != nil {
		t.Fatal(err)
	}
	write(upper, "becomes-dir/inside", "new")
	write(upper, "home/user/new", "new file")
	write(upper, ".roost/envd", "skipped")
	write(upper, "etc/hostname", "changed by the runtime")
	if err := os.Symlink("/etc/keep", filepath.Join(upper, "link")); err != nil {
		t.Fatal(err)
	}

	var layer bytes.Buffer
	if err := LayerOfDiff(t.Context(), lower, upper, map[string]bool{".roost": true}, &layer); err != nil {
		t.Fatal(err)
	}
	if err := template.ApplyLayer(t.Context(), lower, &layer); err != nil {
		t.Fatal(err)
	}
	for rel, want := range map[string]string{
		"etc/keep": "same", "etc/edit": "after!", "becomes-dir/inside": "new", "home/user/new": "new file",
		"etc/hostname": "runtime's",
	} {
		if b, err := os.ReadFile(filepath.Join(lower, rel)); err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", rel, b, err, want)
		}
	}
	for _, rel := range []string{"gone", ".roost"} {
		if _, err := os.Lstat(filepath.Join(lower, rel)); !os.IsNotExist(err) {
			t.Errorf("%s: %v, want it absent", rel, err)
		}
	}
	if target, err := os.Readlink(filepath.Join(lower, "link")); err != nil || target != "/etc/keep" {
		t.Errorf("link = %q, %v", target, err)
	}
}
