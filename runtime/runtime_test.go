package runtime

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
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
		if err := s.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}
