// Package templatetest gives tests of any package the base template from
// a cache shared across test runs and packages, so base is built once per
// machine rather than once per test. It is for tests only.
package templatetest

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"roost.dev/roost/template"
)

// DefaultCacheDir is the cache when ROOST_TEST_CACHE is not set.
const DefaultCacheDir = "/var/tmp/roost-test-cache"

// buildTimeout bounds a first build of base (about a minute with a
// nearby mirror).
const buildTimeout = 15 * time.Minute

// CacheDir is the test cache: $ROOST_TEST_CACHE, or DefaultCacheDir.
func CacheDir() string {
	if d := os.Getenv("ROOST_TEST_CACHE"); d != "" {
		return d
	}
	return DefaultCacheDir
}

// Store returns the template store in the test cache. It logs to t, so
// it must not be used after t ends.
func Store(t testing.TB) *template.Store {
	t.Helper()
	return template.NewStore(filepath.Join(CacheDir(), "templates"), slog.New(slog.NewTextHandler(tWriter{t}, nil)))
}

// Base returns the base template from the test cache, building it there
// on first use (or when the cached one is of an older recipe), its
// progress in the test log. It skips the test, with the reason, when base
// is not cached and cannot be built here (not root, no debootstrap, no
// reachable Debian mirror); a stale base that cannot be rebuilt is
// returned as it is.
func Base(t testing.TB) template.Template {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("base template: needs root (it keeps real file ownership)")
	}
	s := Store(t)
	b, err := s.Get(template.BaseName)
	if err == nil && template.IsCurrentBase(b) {
		return b
	}
	ctx, cancel := context.WithTimeout(t.Context(), buildTimeout)
	defer cancel()
	if err := s.CanBuildBase(ctx); err != nil {
		if b.Name != "" {
			t.Logf("base template in %s is of an older recipe and cannot be rebuilt here (%v): using it", CacheDir(), err)
			return b
		}
		t.Skipf("base template: not cached in %s and cannot be built here: %v", CacheDir(), err)
	}
	b, err = s.EnsureBase(ctx, tWriter{t})
	if err != nil {
		t.Fatalf("build base template: %v", err)
	}
	return b
}

// tWriter logs each line written to it with t.Log.
type tWriter struct{ t testing.TB }

func (w tWriter) Write(b []byte) (int, error) {
	for line := range bytes.Lines(b) {
		w.t.Log(string(bytes.TrimRight(line, "\n")))
	}
	return len(b), nil
}
