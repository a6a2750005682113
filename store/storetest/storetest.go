package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
)

// PostgresEnv is the environment variable that names the PostgreSQL server
// tests may use, as a URL ("postgres://user@host:port/db?sslmode=disable").
// The role needs to create and drop schemas in that database.
const PostgresEnv = "ROOST_TEST_POSTGRES"

// Run runs fn as the subtests "sqlite" and "postgres", each with the URL
// of a fresh, empty database that is removed when the subtest ends. The
// "postgres" subtest is skipped, and says why, when ROOST_TEST_POSTGRES is
// unset. The subtests run one after the other; fn may call t.Parallel.
func Run(t *testing.T, fn func(t *testing.T, dbURL string)) {
	t.Helper()
	t.Run("sqlite", func(t *testing.T) { fn(t, SQLiteURL(t)) })
	t.Run("postgres", func(t *testing.T) { fn(t, PostgresURL(t)) })
}

// SQLiteURL returns the URL of a new SQLite database in t's temporary
// directory; the file goes with the directory.
func SQLiteURL(t testing.TB) string {
	t.Helper()
	return "sqlite://" + filepath.Join(t.TempDir(), "roost.db")
}

// PostgresURL creates a schema of its own for t on the server that
// ROOST_TEST_POSTGRES names and returns a URL whose search_path is that
// schema, so the store's tables (and its migration lock, keyed by the
// schema) are t's alone. The schema is dropped, with everything in it, at
// t's cleanup: open the store after calling PostgresURL, so that it is
// closed before the schema goes. PostgresURL skips t when
// ROOST_TEST_POSTGRES is unset, and fails it when the server cannot be
// reached: a server that was asked for must not be silently left out.
func PostgresURL(t testing.TB) string {
	t.Helper()
	pgURL := os.Getenv(PostgresEnv)
	if pgURL == "" {
		t.Skip(PostgresEnv + " is not set: PostgreSQL not tested")
	}
	u, err := url.Parse(pgURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("%s is not a postgres:// URL", PostgresEnv)
	}
	var b [6]byte
	rand.Read(b[:])
	schema := "roost_test_" + hex.EncodeToString(b[:])
	// The name is ours (letters, digits, '_'): no quoting needed.
	if err := exec(pgURL, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := exec(pgURL, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Error(err)
		}
	})
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// exec runs one statement on its own short-lived connection: a test holds
// no connection of its own to the server while it runs.
func exec(pgURL, stmt string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db, err := sql.Open("pgx", pgURL)
	if err != nil {
		return fmt.Errorf("open postgres: %w", err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, stmt); err != nil {
		return fmt.Errorf("postgres %q: %w", stmt, err)
	}
	return nil
}
