package template

import (
	"os"
	"path/filepath"
	"testing"
)

func TestStampChangesWithTheTreeNotWithItsUse(t *testing.T) {
	s := NewStore(t.TempDir(), nil)
	rootfs := filepath.Join(s.Dir(), "t", "rootfs")
	if err := os.MkdirAll(rootfs, 0o700); err != nil {
		t.Fatal(err)
	}
	meta := filepath.Join(s.Dir(), "t", metaFile)
	if err := os.WriteFile(meta, []byte(`{"name":"t","created":"2026-12-05T00:00:00Z"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	stamp := func() string {
		t.Helper()
		st, err := Stamp(rootfs)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	before := stamp()
	s.Touch("t")
	if after := stamp(); after != before {
		t.Errorf("a use changed the stamp: %s → %s", before, after)
	}
	if err := os.WriteFile(meta, []byte(`{"name":"t","created":"2026-12-05T00:00:01Z"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if after := stamp(); after == before {
		t.Error("new metadata (a rebuild) kept the stamp")
	}
	if _, err := Stamp(filepath.Join(s.Dir(), "none")); err == nil {
		t.Error("a missing tree has a stamp")
	}
}
