package console_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/console"
)

var discard = slog.New(slog.DiscardHandler)

// logSize is the size of both files of the ring at path.
func logSize(t *testing.T, path string) (int64, string) {
	t.Helper()
	var n int64
	var all []byte
	for _, p := range []string{path + ".1", path} {
		b, err := os.ReadFile(p)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		n += int64(len(b))
		all = append(all, b...)
	}
	return n, string(all)
}

// A console written far faster and longer than its bounds keeps its log
// within runtime.LogMaxBytes, says what it dropped, and goes on logging.
func TestFloodStaysBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), runtime.LogFile)
	w, err := console.Pipe(discard, path)
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("x"), 1<<20)
	for range 64 {
		if _, err := w.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	console.Wait(path, time.Minute)
	n, all := logSize(t, path)
	if n > runtime.LogMaxBytes {
		t.Fatalf("log holds %d bytes, over %d", n, runtime.LogMaxBytes)
	}
	if !strings.Contains(all, "bytes of console output dropped") {
		t.Errorf("no note of the dropped output")
	}
}

// Lines within the rate are all kept, in order, across rotations.
func TestRotationKeepsNewest(t *testing.T) {
	path := filepath.Join(t.TempDir(), runtime.LogFile)
	// A log an earlier drain left, nearly full.
	if err := os.WriteFile(path, bytes.Repeat([]byte("old\n"), runtime.LogMaxBytes/8-1), 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := console.Pipe(discard, path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		fmt.Fprintf(w, "line %d\n", i)
	}
	w.Close()
	console.Wait(path, time.Minute)
	n, all := logSize(t, path)
	if n > runtime.LogMaxBytes {
		t.Fatalf("log holds %d bytes", n)
	}
	if !strings.HasSuffix(all, "line 998\nline 999\n") || !strings.Contains(all, "old\nline 0\n") {
		t.Errorf("log does not end with the newest lines: ...%q", all[max(0, len(all)-40):])
	}
	if _, err := os.Stat(path + ".1"); err != nil {
		t.Errorf("no rotation: %v", err)
	}
}

// Attach adopts a pipe through /proc, and refuses what is not a pipe.
func TestAttach(t *testing.T) {
	path := filepath.Join(t.TempDir(), runtime.LogFile)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := console.Attach(discard, path, os.Getpid(), 999, int(w.Fd())); err != nil {
		t.Fatal(err)
	}
	// Twice is once.
	if err := console.Attach(discard, path, os.Getpid(), int(w.Fd())); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(w, "adopted")
	w.Close()
	r.Close() // the drain is now the pipe's only reader
	console.Wait(path, time.Minute)
	if _, all := logSize(t, path); all != "adopted\n" {
		t.Errorf("log %q", all)
	}
	f, err := os.CreateTemp(t.TempDir(), "file")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := console.Attach(discard, path+"2", os.Getpid(), int(f.Fd())); err == nil {
		t.Error("attached a regular file")
	}
}
