package runtimetest

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sync"
	"testing"

	"roost.dev/roost/template/templatetest"
)

// The programs tests run in or for sandboxes, built from this module.
const (
	EnvdPackage      = "roost.dev/roost/cmd/envd"
	GuestInitPackage = "roost.dev/roost/cmd/roost-guest"
	InitPackage      = "roost.dev/roost/cmd/roost-init"
)

var (
	builtMu sync.Mutex
	built   = map[string]*builtBinary{}
)

type builtBinary struct {
	once sync.Once
	path string
	err  error
}

// Binary builds the command pkg of this module as `make build` does
// (static, trimmed, stripped), once per test binary, into the test cache,
// and returns its path. Concurrent test binaries each build and rename
// into place, so none sees a half-written file; the same bytes each
// time keep the caches keyed by them (VM images) warm.
func Binary(t testing.TB, pkg string) string {
	t.Helper()
	p, err := BuildBinary(pkg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// BuildBinary is Binary for callers without a testing.TB (TestMain).
func BuildBinary(pkg string) (string, error) {
	builtMu.Lock()
	b, ok := built[pkg]
	if !ok {
		b = &builtBinary{}
		built[pkg] = b
	}
	builtMu.Unlock()
	b.once.Do(func() { b.path, b.err = build(pkg) })
	return b.path, b.err
}

func build(pkg string) (string, error) {
	name := path.Base(pkg)
	dir := filepath.Join(templatetest.CacheDir(), "bin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, "."+name+"-")
	if err != nil {
		return "", err
	}
	tmp.Close()
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", tmp.Name(), pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp.Name())
		return "", fmt.Errorf("build %s: %v: %s", pkg, err, out)
	}
	out := filepath.Join(dir, name)
	if err := os.Rename(tmp.Name(), out); err != nil {
		os.Remove(tmp.Name())
		return "", err
	}
	return out, nil
}

// Envd is envd, built by Binary.
func Envd(t testing.TB) string { return Binary(t, EnvdPackage) }

// GuestInit is the VM guests' init (cmd/roost-guest), built by Binary.
func GuestInit(t testing.TB) string { return Binary(t, GuestInitPackage) }
