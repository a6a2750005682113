// Package namespacetest gives tests the namespace driver's sandbox init
// binary (cmd/roost-init), which the driver executes and a test binary
// therefore has to provide.
package namespacetest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"roost.dev/roost/runtime/runtimetest"
)

// Init returns cmd/roost-init, built (static, as `make build` builds it)
// once per test binary into the test cache; pass it as namespace.Config.Init.
func Init(t testing.TB) string { return runtimetest.Binary(t, runtimetest.InitPackage) }

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
	p, err := runtimetest.BuildBinary(runtimetest.InitPackage)
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
