package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/runtime"
)

// The logs routes read the console ring across a rotation: the older
// file, then the newer, each line once; and the newer alone when the
// older is the same file (the ring turned while opening).
func TestReadLogAcrossRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, runtime.LogFile)
	var older, newer strings.Builder
	for i := range 3 {
		fmt.Fprintf(&older, "old %d\n", i)
		fmt.Fprintf(&newer, "new %d\n", i)
	}
	older.WriteString("cut ") // a line the rotation split
	if err := os.WriteFile(path+".1", []byte(older.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("in two\n"+newer.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := readLog(path, time.Now(), LogQuery{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for _, e := range got {
		msgs = append(msgs, e.Message)
	}
	want := "old 0|old 1|old 2|cut in two|new 0|new 1|new 2"
	if strings.Join(msgs, "|") != want {
		t.Errorf("got %q, want %q", strings.Join(msgs, "|"), want)
	}

	// The same file under both names: read once.
	if err := os.Remove(path + ".1"); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	got, err = readLog(path, time.Now(), LogQuery{Limit: 100})
	if err != nil || len(got) != 4 {
		t.Errorf("same file twice: %d entries, %v", len(got), err)
	}
}
