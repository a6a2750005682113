package agent

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"roost.dev/roost/errdefs"
)

// TestVolumeDirID: hosts sharing a volume directory read one ID, made
// once even when they race for it; another directory has another.
func TestVolumeDirID(t *testing.T) {
	shared, other := t.TempDir(), t.TempDir()
	const n = 8
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ids[i], errs[i] = newVolumes(t.TempDir(), shared, slog.Default()).dirID()
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || ids[i] != ids[0] || !strings.HasPrefix(ids[i], "vd-") {
			t.Fatalf("host %d: volume dir ID %q, %v; want %q", i, ids[i], errs[i], ids[0])
		}
	}
	if again, err := newVolumes(t.TempDir(), shared, slog.Default()).dirID(); err != nil || again != ids[0] {
		t.Fatalf("read again: %q, %v", again, err)
	}
	if o, err := newVolumes(t.TempDir(), other, slog.Default()).dirID(); err != nil || o == ids[0] {
		t.Fatalf("another directory's ID: %q, %v", o, err)
	}
	if left, _ := filepath.Glob(filepath.Join(shared, VolumeDirIDFile+".*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	if err := os.WriteFile(filepath.Join(other, VolumeDirIDFile), []byte("\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := newVolumes(t.TempDir(), other, slog.Default()).dirID(); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("empty ID file: %v, want errdefs.ErrInvalid", err)
	}
}
