package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"roost.dev/roost/controlplane"
	"roost.dev/roost/store"
)

// startBanner is what one start of roost up does with the key: open the data
// directory's database, make sure of the key, print the banner.
func startBanner(t *testing.T, dataDir string) (apiKey, string) {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	st, err := openStore(ctx, "", dataDir, log)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cp, err := controlplane.New(controlplane.Config{}, st, log)
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Close()
	k, err := ensureAPIKey(ctx, cp, dataDir)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	printBanner(&b, &serving{publicURL: "http://127.0.0.1:3000"}, k)
	return k, b.String()
}

// The first start prints the key it made; later starts do not, and say
// where it is kept; a key from $ROOST_API_KEY is never printed.
func TestBannerPrintsKeyOnlyWhenCreated(t *testing.T) {
	t.Setenv(apiKeyEnv, "")
	dir := t.TempDir()
	first, banner := startBanner(t, dir)
	keyFile := filepath.Join(dir, apiKeyFile)
	if !first.created || !strings.Contains(banner, first.value) || !strings.Contains(banner, keyFile) {
		t.Fatalf("first start: created %v, banner:\n%s", first.created, banner)
	}
	if b, err := os.ReadFile(keyFile); err != nil || strings.TrimSpace(string(b)) != first.value {
		t.Fatalf("key file holds %q (%v), want the printed key", b, err)
	}

	second, banner := startBanner(t, dir)
	if second.created || second.value != first.value {
		t.Fatalf("second start made a key: %+v", second)
	}
	if strings.Contains(banner, first.value) {
		t.Fatalf("second start printed the key:\n%s", banner)
	}
	for _, want := range []string{"kept in " + keyFile, `export E2B_API_KEY="$(cat ` + keyFile + `)"`, `export ROOST_API_KEY="$(cat ` + keyFile + `)"`} {
		if !strings.Contains(banner, want) {
			t.Errorf("second start's banner lacks %q:\n%s", want, banner)
		}
	}

	envKey := "roost_" + strings.Repeat("ab", 16)
	t.Setenv(apiKeyEnv, envKey)
	third, banner := startBanner(t, dir)
	if third.created || third.value != envKey || strings.Contains(banner, envKey) || !strings.Contains(banner, `export E2B_API_KEY="$ROOST_API_KEY"`) {
		t.Fatalf("start with $%s: %+v, banner:\n%s", apiKeyEnv, third, banner)
	}
	// Every start's key works: the store knows both.
	st, err := store.Open(context.Background(), "sqlite://"+filepath.Join(dir, "db", "roost.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, k := range []string{first.value, envKey} {
		if _, err := st.APIKeyByHash(context.Background(), store.HashKey(k)); err != nil {
			t.Errorf("key %s… not in the store: %v", k[:10], err)
		}
	}
}

func TestQuotaFlagAndChanges(t *testing.T) {
	var f quotaFlag
	if err := f.Set("sandboxes=5,timeout=1h"); err != nil {
		t.Fatal(err)
	}
	if err := f.Set("sandboxes=7"); err != nil {
		t.Fatal(err)
	}
	if got := f.String(); got != "sandboxes=7,timeout=3600" {
		t.Fatalf("--team-quota twice = %q", got)
	}
	if err := f.Set("gpus=1"); err == nil {
		t.Fatal("--team-quota took an unknown limit")
	}
	changes, err := parseQuotaArgs([]string{"vcpus=default", "timeout=1h"}, true)
	if err != nil || len(changes) != 2 || changes["vcpus"] != nil || *changes["timeout"] != 3600 {
		t.Fatalf("changes = %v, %v", changes, err)
	}
	if _, err := parseQuotaArgs([]string{"gpus=default"}, true); err == nil {
		t.Fatal("an unknown limit=default was taken")
	}
	if _, err := parseQuotaArgs([]string{"vcpus=default"}, false); err == nil {
		t.Fatal("limit=default was taken where there is no default to go back to")
	}
}
