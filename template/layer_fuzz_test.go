package template

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// FuzzApplyLayer applies arbitrary bytes as a layer over a tree with a
// symlink out of it: it must fail or succeed, never panic, hang or write
// beside the tree.
func FuzzApplyLayer(f *testing.F) {
	f.Add(mkTar(f, false, dir("a/", 0o755), file("a/x", 0o644, "x"), file("a/.wh.x", 0o644, "")))
	f.Add(mkTar(f, false, file("out/.wh.secret", 0o644, ""), file("b/.wh..wh..opq", 0o644, "")))
	f.Add(mkTar(f, false, symlink("l", "../outside"), file("l/x", 0o644, "x"), hardlink("h", "out/secret")))
	f.Add(mkTar(f, false, file(".wh...", 0o644, ""), file("../x", 0o644, "x")))
	f.Add(mkTar(f, true, file("z", 0o644, "gzip")))
	f.Add(sparseClaim(f, "big", 1<<40))
	f.Fuzz(func(t *testing.T, layer []byte) {
		top := t.TempDir()
		root, outside := filepath.Join(top, "root"), filepath.Join(top, "outside")
		for _, d := range []string{root, outside} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("keep"), 0o644); err != nil {
			t.Fatal(err)
		}
		lower := mkTar(t, false, symlink("out", outside), dir("b/", 0o755), file("b/old", 0o644, "o"))
		if err := ApplyLayer(t.Context(), root, bytes.NewReader(lower)); err != nil {
			t.Fatal(err)
		}
		// A small budget: reading a sparse file's holes takes time.
		_ = applyLayer(t.Context(), root, bytes.NewReader(layer), &sizeBudget{limit: 1 << 20}, slog.New(slog.DiscardHandler))
		entries, _ := os.ReadDir(top)
		if len(entries) != 2 {
			t.Fatalf("%d entries beside the tree", len(entries))
		}
		got, _ := os.ReadDir(outside)
		if b, _ := os.ReadFile(filepath.Join(outside, "secret")); len(got) != 1 || string(b) != "keep" {
			t.Fatalf("outside changed: %v %q", got, b)
		}
		_ = removeTree(root) // read-only dirs the layer made
	})
}
