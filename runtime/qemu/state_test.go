package qemu

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/guest"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/microvm"
)

// A sandbox an older agent recorded has no driver state: the driver
// reads the qemu.json it wrote itself then. Here its QEMU is gone, so
// Recover cleans up and says not found, twice.
func TestRecoverLegacyStateOfGoneSandbox(t *testing.T) {
	dir := t.TempDir()
	legacy := `{"version": 1, "id": "gone", "pid": 4194304, "pidStart": 1, "envdAddr": "10.0.0.2:49983",
		"started": "2025-01-02T03:04:05Z", "stateDir": "` + dir + `", "netns": "/run/netns/roost-gone",
		"args": ["-m", "512"], "snapshot": "", "memoryMB": 512}`
	if err := os.WriteFile(filepath.Join(dir, "qemu.json"), []byte(legacy), 0o600); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(paths(dir).disk, []byte("x"), 0o600)
	d := New(Config{DataDir: t.TempDir()}, slog.New(slog.DiscardHandler))
	spec := runtime.Spec{ID: "gone", StateDir: dir}
	if _, err := d.Recover(context.Background(), spec, runtime.DriverState{}); !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "qemu exited") {
		t.Fatalf("recover: %v, want qemu exited: ErrNotFound", err)
	}
	for _, f := range []string{paths(dir).disk, filepath.Join(dir, "qemu.json")} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s of a gone sandbox survived Recover", f)
		}
	}
	if _, err := d.Recover(context.Background(), spec, runtime.DriverState{}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("second recover: %v", err)
	}
}

// A hibernated sandbox whose snapshot is gone cannot be restored: Recover
// and Restore say not found, and leave the ID free.
func TestRestoreWithoutSnapshot(t *testing.T) {
	dir := t.TempDir()
	legacy := `{"version": 1, "id": "cold", "pid": 0, "stateDir": "` + dir + `", "snapshot": "` + dir + `/memory.snap"}`
	if err := os.WriteFile(filepath.Join(dir, "qemu.json"), []byte(legacy), 0o600); err != nil {
		t.Fatal(err)
	}
	d := New(Config{DataDir: t.TempDir()}, nil)
	spec := runtime.Spec{ID: "cold", StateDir: dir,
		Network: runtime.Network{Netns: "/run/netns/none", Interface: "eth0", Address: netip.MustParsePrefix("10.0.0.2/30")}}
	if _, err := d.Restore(context.Background(), spec, runtime.DriverState{}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("restore: %v, want ErrNotFound", err)
	}
	if _, err := d.Recover(context.Background(), spec, runtime.DriverState{}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("recover: %v, want ErrNotFound", err)
	}
	if _, err := d.Stats(context.Background(), "cold"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("the ID stays taken: %v", err)
	}
}

func TestProbeSaysWhatIsMissing(t *testing.T) {
	d := New(Config{DataDir: t.TempDir(), QEMU: "/nonexistent/qemu-system-x86_64", Init: "/nonexistent/roost-guest",
		BootDir: t.TempDir(), ModulesDir: t.TempDir()}, nil)
	av := d.Probe(context.Background())
	if av.Available {
		t.Fatal("available without qemu, kernel or init")
	}
	for _, want := range []string{"qemu-system-x86_64 not found", "linux-image-amd64", "roost-guest"} {
		if !strings.Contains(av.Reason, want) {
			t.Errorf("reason %q does not mention %q", av.Reason, want)
		}
	}
}

func TestCmdlineCarriesGuestConfig(t *testing.T) {
	no := false
	d := New(Config{DataDir: t.TempDir(), KVM: &no}, nil)
	line := d.vmm.cmdline(runtime.Spec{ID: "sb1", Env: map[string]string{"A": "1"}})
	for _, want := range []string{"roost.ip=10.0.2.2/30,10.0.2.1", "roost.hostname=sb1", "roost.env=", "tsc=reliable", "console=ttyS0"} {
		if !strings.Contains(line, want) {
			t.Errorf("cmdline %q lacks %q", line, want)
		}
	}
	// The guest init reads what the driver writes.
	c, err := guest.ParseCmdline(line)
	if err != nil {
		t.Fatal(err)
	}
	if c.Address != microvm.GuestAddr || c.Gateway != microvm.GuestGW || c.Hostname != "sb1" || c.Env["A"] != "1" || c.Root != "/dev/vda" || c.Clock.IsZero() {
		t.Errorf("guest parsed %+v", c)
	}
}
