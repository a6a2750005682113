package namespacetest

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"roost.dev/roost/runtime/namespace"
	"roost.dev/roost/runtime/runtimetest"
	"roost.dev/roost/template/templatetest"
)

// Driver is a namespace driver for tests, its state in the shared test
// cache and its init built from this tree; it skips the test when the
// host cannot run namespace sandboxes or the test is not root.
func Driver(t testing.TB) *namespace.Driver {
	t.Helper()
	runtimetest.RequireRoot(t)
	if av := namespace.Probe(); !av.Available {
		t.Skipf("namespace runtime unavailable: %s", av.Reason)
	}
	d, err := namespace.New(namespace.Config{
		DataDir: filepath.Join(templatetest.CacheDir(), "runtime", "namespace"),
		Init:    Init(t),
	}, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	if av := d.Probe(context.Background()); !av.Available {
		t.Fatalf("namespace driver unavailable: %s", av.Reason)
	}
	return d
}
