package sandboxinit

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSpawnStdin checks that envd's stdin is /dev/null even when a garbage
// collection runs between opening it and forking: the *os.File must stay
// referenced, or its finalizer closes the descriptor before the child
// gets it.
func TestSpawnStdin(t *testing.T) {
	t.Cleanup(func() { beforeFork = func() {} })
	beforeFork = func() {
		// Two cycles and a pause: finalizers run on their own goroutine
		// after the collection that found the object unreachable.
		for range 2 {
			runtime.GC()
			time.Sleep(10 * time.Millisecond)
		}
	}
	out := filepath.Join(t.TempDir(), "stdin")
	for i := range 3 {
		pid, err := spawn("/bin/sh", []string{"sh", "-c", `readlink /proc/self/fd/0 > "$OUT"`},
			[]string{"PATH=/usr/bin:/bin", "OUT=" + out}, nil)
		if err != nil {
			t.Fatalf("spawn %d: %v", i, err)
		}
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil {
			t.Fatal(err)
		}
		if !ws.Exited() || ws.ExitStatus() != 0 {
			t.Fatalf("child %d: %v", i, ws)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(b)); got != os.DevNull {
			t.Errorf("child %d's stdin is %q, want %s", i, got, os.DevNull)
		}
	}
}
