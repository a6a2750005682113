package qemu_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/runtimetest"
)

// The guest's root floods the serial console (its init's stderr, which
// QEMU writes to the sandbox's log on the host) with four times the log's
// bound (an emulated UART is slow: more only takes longer): the host-side
// log and QEMU's own stay within runtime.LogMaxBytes, and the guest still
// runs commands and logs.
func TestAttackConsoleFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	d := newDriver(t)
	sb := runtimetest.Start(t, d, runtimetest.Network(t), runtimetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	res, err := sb.Exec(ctx, "head -c 16M /dev/zero | tr '\\0' x > /proc/1/fd/2 && echo flooded")
	if err != nil || strings.TrimSpace(res.Stdout) != "flooded" {
		t.Fatalf("flood did not run: %+v, %v", res, err)
	}
	sb.MustExec(t, "echo after-the-flood > /proc/1/fd/2")
	var log string
	for range 300 {
		if log = ring(t, sb.Spec.StateDir, runtime.LogFile); strings.Contains(log, "after-the-flood") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(log, "after-the-flood") {
		t.Fatal("a line after the flood did not reach the log")
	}
	for _, name := range []string{runtime.LogFile, "qemu.log"} {
		if n := len(ring(t, sb.Spec.StateDir, name)); n > runtime.LogMaxBytes {
			t.Errorf("%s holds %d bytes, over %d", name, n, runtime.LogMaxBytes)
		}
	}
}

// ring is both files of the log name in stateDir.
func ring(t *testing.T, stateDir, name string) string {
	t.Helper()
	var all []byte
	for _, p := range []string{name + ".1", name} {
		b, err := os.ReadFile(filepath.Join(stateDir, p))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	return string(all)
}
