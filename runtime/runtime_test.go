package runtime

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"roost.dev/roost/errdefs"
)

func TestSpecValidate(t *testing.T) {
	dir := t.TempDir()
	envd := filepath.Join(dir, "envd")
	if err := os.WriteFile(envd, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	good := Spec{ID: "sb1", StateDir: dir, RootFS: dir, Envd: envd}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid spec: %v", err)
	}
	for name, mod := range map[string]func(*Spec){
		"no id":          func(s *Spec) { s.ID = "" },
		"slash in id":    func(s *Spec) { s.ID = "a/b" },
		"dot id":         func(s *Spec) { s.ID = ".." },
		"no state dir":   func(s *Spec) { s.StateDir = "" },
		"negative vcpus": func(s *Spec) { s.Limits.VCPUs = -1 },
		"negative pids":  func(s *Spec) { s.Limits.Pids = -1 },
		"rootfs missing": func(s *Spec) { s.RootFS = filepath.Join(dir, "nope") },
		"rootfs a file":  func(s *Spec) { s.RootFS = envd },
		"envd missing":   func(s *Spec) { s.Envd = filepath.Join(dir, "nope") },
		"envd a dir":     func(s *Spec) { s.Envd = dir },
	} {
		s := good
		mod(&s)
		if err := s.Validate(); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}

func TestLimitsOr(t *testing.T) {
	def := Limits{VCPUs: 2, MemoryMB: 512, DiskMB: 1024, Pids: 100}
	if got := (Limits{}).Or(def); got != def {
		t.Errorf("zero limits: %+v", got)
	}
	set := Limits{VCPUs: 1, MemoryMB: 64, DiskMB: 10, Pids: 5}
	if got := set.Or(def); got != set {
		t.Errorf("set limits changed: %+v", got)
	}
	if got := (Limits{MemoryMB: 64}).Or(def); got != (Limits{VCPUs: 2, MemoryMB: 64, DiskMB: 1024, Pids: 100}) {
		t.Errorf("partly set: %+v", got)
	}
}
