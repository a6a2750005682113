package namespace_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/runtimetest"
)

// consoleLog is a sandbox's console ring, both files, and its size.
func consoleLog(t *testing.T, stateDir string) (string, int64) {
	t.Helper()
	var all []byte
	for _, name := range []string{runtime.LogFile + ".1", runtime.LogFile} {
		b, err := os.ReadFile(filepath.Join(stateDir, name))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	return string(all), int64(len(all))
}

// waitLog polls the console ring until it holds text.
func waitLog(t *testing.T, stateDir, text string) string {
	t.Helper()
	var log string
	for range 300 {
		if log, _ = consoleLog(t, stateDir); strings.Contains(log, text) {
			return log
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("console log has no %q", text)
	return ""
}

// The sandbox's root floods its console (the init's stderr, which is the
// sandbox's log on the host) with 200 MiB: the host-side log stays within
// runtime.LogMaxBytes, and the sandbox still runs commands and logs.
func TestAttackConsoleFlood(t *testing.T) {
	d := newDriver(t)
	sb := runtimetest.Start(t, d, runtimetest.Network(t), runtimetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// The console is the init's stderr and envd's; a sandbox that may
	// not reach either through /proc is refused, which is a pass too.
	flood := `for f in /proc/1/fd/2 /proc/$PPID/fd/2; do
		if head -c 200M /dev/zero 2>/dev/null > $f; then echo "flooded $f"; exit 0; fi
	done; echo refused`
	res, err := sb.Exec(ctx, flood)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("flood: %s", strings.TrimSpace(res.Stdout))
	if _, n := consoleLog(t, sb.Spec.StateDir); n > runtime.LogMaxBytes {
		t.Fatalf("console log holds %d bytes after the flood, over %d", n, runtime.LogMaxBytes)
	}
	// Still works: a command runs, and a line reaches the log.
	sb.MustExec(t, "echo still-works")
	if f, ok := strings.CutPrefix(strings.TrimSpace(res.Stdout), "flooded "); ok {
		sb.MustExec(t, "echo after-the-flood > "+f)
		log := waitLog(t, sb.Spec.StateDir, "after-the-flood")
		if !strings.Contains(log, "bytes of console output dropped") {
			t.Error("the log does not say output was dropped")
		}
	}
	if _, n := consoleLog(t, sb.Spec.StateDir); n > runtime.LogMaxBytes {
		t.Fatalf("console log holds %d bytes, over %d", n, runtime.LogMaxBytes)
	}
}

// The sandbox opens and closes loopback listeners in a loop (10,000 of
// them), each of which envd's port forwarder would log twice: envd's log
// lines stay within its rate, and forwarding still works afterwards.
func TestAttackListenerChurnLogFlood(t *testing.T) {
	d := newDriver(t)
	sb := runtimetest.Start(t, d, runtimetest.Network(t), runtimetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	before, _ := consoleLog(t, sb.Spec.StateDir)
	began := time.Now()
	churn := `python3 - <<'PY'
import socket, time
for i in range(10000):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 20000 + i % 2000))
    s.listen()
    if i % 10 == 0:
        time.sleep(0.01)  # long enough, now and then, for envd's scan to see it
    s.close()
print("churned")
PY`
	res, err := sb.Exec(ctx, churn)
	if err != nil || strings.TrimSpace(res.Stdout) != "churned" {
		t.Fatalf("churn did not run: %+v, %v", res, err)
	}
	// Let envd's scans see the last listeners go.
	time.Sleep(2 * time.Second)
	elapsed := time.Since(began).Seconds()
	after, _ := consoleLog(t, sb.Spec.StateDir)
	lines := strings.Count(after[len(before):], "\n")
	// envd passes 200 lines at once and 20 a second (envd/server), plus
	// one note per pass after drops.
	if bound := 2 * (200 + int(20*elapsed)); lines > bound {
		t.Fatalf("%d log lines in %.0fs of churn, over %d", lines, elapsed, bound)
	}
	t.Logf("%d log lines in %.1fs of churn", lines, elapsed)
	// Still works: a loopback server is forwarded and answers.
	sb.MustExec(t, "cd /tmp && nohup python3 -m http.server --bind 127.0.0.1 8321 >/dev/null 2>&1 &")
	addr := net.JoinHostPort(sb.Instance.Envd.Addr().String(), "8321")
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if i == 200 {
			t.Fatalf("a loopback server is not forwarded after the churn: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
