package agent

import (
	"os"
	"path/filepath"
	"testing"
)

// TestDirUsageShared: a file linked into two directories counts half in
// each; one of its own counts whole.
func TestDirUsageShared(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i)
	}
	if err := os.WriteFile(filepath.Join(a, "own"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(a, "shared"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(a, "shared"), filepath.Join(b, "shared")); err != nil {
		t.Fatal(err)
	}
	ua, ub := dirUsage(a), dirUsage(b)
	if ua < 3<<19 || ua > 3<<19+64<<10 {
		t.Errorf("a: %d bytes, want 1.5 MiB (its own file and half the shared one)", ua)
	}
	if ub < 1<<19 || ub > 1<<19+64<<10 {
		t.Errorf("b: %d bytes, want 0.5 MiB (half the shared file)", ub)
	}
}
