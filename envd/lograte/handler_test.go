package lograte_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"roost.dev/roost/envd/lograte"
)

// A loop of log lines yields at most the burst, then one line saying how
// many were dropped before the next that passes.
func TestBurstThenDropped(t *testing.T) {
	var out bytes.Buffer
	log := slog.New(lograte.New(slog.NewJSONHandler(&out, nil), 0.000001, 10)).With("service", "ports")
	for range 10000 {
		log.Info("port forward started", "listen", "10.0.0.2:8000")
	}
	if n := strings.Count(out.String(), "\n"); n != 10 {
		t.Fatalf("%d lines, want the burst of 10", n)
	}
}
