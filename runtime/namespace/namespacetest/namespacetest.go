// Package namespacetest gives tests the namespace driver's sandbox init
// binary (cmd/roost-init), which the driver executes and a test binary
// therefore has to provide.
package namespacetest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"roost.dev/roost/template/templatetest"
)

var (
	initOnce sync.Once
	initPath string
	initErr  error
)

// Init returns cmd/roost-init, built (static, as `make build` builds it)
// once per test binary into the test cache; pass it as namespace.Config.Init.
func Init(t testing.TB) string {
	t.Helper()
	p, err := build()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// InstallInit builds cmd/roost-init and links it next to the running test
// binary, where the driver looks by default, for tests that build a driver
// with a zero Config.Init. Call it from TestMain; go test runs each test
// binary from a private work directory. When it fails, the driver's Probe
// reports the init missing.
func InstallInit() {
	if err := installInit(); err != nil {
		fmt.Fprintln(os.Stderr, "namespacetest:", err)
	}
}

func installInit() error {
	p, err := build()
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	link := filepath.Join(filepath.Dir(exe), "roost-init")
	if err := os.Remove(link); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return os.Symlink(p, link)
}

func build() (string, error) {
	initOnce.Do(func() {
		dir := filepath.Join(templatetest.CacheDir(), "bin")
		if initErr = os.MkdirAll(dir, 0o755); initErr != nil {
			return
		}
		tmp, err := os.CreateTemp(dir, ".roost-init-")
		if err != nil {
			initErr = err
			return
		}
		tmp.Close()
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", tmp.Name(), "roost.dev/roost/cmd/roost-init")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			os.Remove(tmp.Name())
			initErr = fmt.Errorf("build roost-init: %v: %s", err, out)
			return
		}
		// The sandbox's root, an unprivileged host user, never opens it by
		// path: the driver passes it as an open file.
		initPath = filepath.Join(dir, "roost-init")
		initErr = os.Rename(tmp.Name(), initPath)
	})
	return initPath, initErr
}
