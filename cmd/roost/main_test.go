package main

import (
	"errors"
	"log/slog"
	"os/exec"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"roost.dev/roost/errdefs"
)

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:7070": true,
		"127.1.2.3:7070": true,
		"[::1]:7070":     true,
		"localhost:7070": true,
		"0.0.0.0:7070":   false,
		":7070":          false,
		"[::]:7070":      false,
		"10.0.0.5:7070":  false,
		"example.com:80": false,
		"127.0.0.1":      false, // no port: not a listen address
	} {
		if got := isLoopback(addr); got != want {
			t.Errorf("isLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{
		0:         "0 B",
		1023:      "1023 B",
		1024:      "1.0 KiB",
		203743232: "194.3 MiB",
		3 << 30:   "3.0 GiB",
	} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestPairs(t *testing.T) {
	got, err := pairs([]string{"a=1", "b=x=y", "c="})
	if err != nil || len(got) != 3 || got["a"] != "1" || got["b"] != "x=y" || got["c"] != "" {
		t.Fatalf("pairs: %v %v", got, err)
	}
	for _, bad := range []string{"novalue", "=v"} {
		if _, err := pairs([]string{bad}); err == nil {
			t.Errorf("pairs(%q) accepted", bad)
		}
	}
	if got, err := pairs(nil); got != nil || err != nil {
		t.Errorf("pairs(nil) = %v, %v", got, err)
	}
	if s := joinPairs(map[string]string{"b": "2", "a": "1"}); s != "a=1,b=2" {
		t.Errorf("joinPairs: %q", s)
	}
}

func TestSelectRuntime(t *testing.T) {
	for _, c := range []struct {
		flag, want string
		err        error
	}{
		{"auto", "auto", nil},
		{"", "auto", nil},
		{"namespace", "namespace", nil},
		{"qemu", "qemu", nil},
		{"firecracker", "firecracker", nil},
		{"kvm", "", errdefs.ErrInvalid},
		{"QEMU", "", errdefs.ErrInvalid},
	} {
		got, err := selectRuntime(c.flag)
		if got != c.want || !errors.Is(err, c.err) || (c.err == nil) != (err == nil) {
			t.Errorf("selectRuntime(%q) = %q, %v; want %q, %v", c.flag, got, err, c.want, c.err)
		}
	}
	// Without a firecracker binary (as here), asking for firecracker fails
	// at start-up with the driver's reasons; auto falls back to namespace.
	if _, err := exec.LookPath("firecracker"); err != nil {
		_, err := newRuntime(t.Context(), "firecracker", t.TempDir(), slog.New(slog.DiscardHandler))
		if err == nil || !strings.Contains(err.Error(), "firecracker runtime unavailable on this host") || !strings.Contains(err.Error(), "firecracker not found") {
			t.Errorf("--runtime firecracker without the binary: %v, want the reason", err)
		}
	}
	for _, cmd := range []*cobra.Command{newAgentCmd(), newUpCmd()} {
		f := cmd.Flags().Lookup("runtime")
		if f == nil || f.DefValue != "auto" || !strings.Contains(f.Usage, "qemu") || !strings.Contains(f.Usage, "firecracker") {
			t.Errorf("roost %s --runtime: %+v", cmd.Name(), f)
		}
	}
}
