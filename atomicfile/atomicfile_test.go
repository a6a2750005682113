package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestWrite(t *testing.T) {
	for name, write := range map[string]func(string, []byte, os.FileMode) error{"Write": Write, "Replace": Replace} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "state.json")
			for _, content := range []string{"first", "second, longer"} {
				if err := write(p, []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
				if b, _ := os.ReadFile(p); string(b) != content {
					t.Errorf("read %q, want %q", b, content)
				}
			}
			if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
				t.Errorf("mode %v", st.Mode())
			}
			if _, err := os.Stat(p + ".tmp"); !os.IsNotExist(err) {
				t.Errorf("temporary file left: %v", err)
			}
			if err := write(filepath.Join(dir, "missing", "x"), []byte("x"), 0o600); err == nil {
				t.Error("write into a missing directory succeeded")
			}
		})
	}
}

// TestWriteSyncsDirectory checks that the directory is synced once the
// rename is done: a sync before it would not make the new name durable.
func TestWriteSyncsDirectory(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	var synced []string
	orig := syncDir
	t.Cleanup(func() { syncDir = orig })
	syncDir = func(d string) error {
		b, err := os.ReadFile(p)
		if err != nil || string(b) != "new" {
			t.Errorf("directory synced before the rename: read %q, %v", b, err)
		}
		if _, err := os.Stat(p + ".tmp"); !os.IsNotExist(err) {
			t.Errorf("directory synced while the temporary file exists: %v", err)
		}
		synced = append(synced, d)
		return orig(d)
	}
	if err := Write(p, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	if len(synced) != 1 || synced[0] != dir {
		t.Errorf("synced %q, want [%q]", synced, dir)
	}

	// A failed directory sync is Write's error: the caller cannot rely on
	// the file surviving a crash.
	failed := errors.New("sync failed")
	syncDir = func(string) error { return failed }
	if err := Write(p, []byte("newer"), 0o600); !errors.Is(err, failed) {
		t.Errorf("Write = %v, want the sync error", err)
	}
}

func TestSyncDir(t *testing.T) {
	if err := syncDir(t.TempDir()); err != nil {
		t.Error(err)
	}
	if err := syncDir(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("syncing a missing directory succeeded")
	}
}
