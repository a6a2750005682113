package qemu

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/guest"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/microvm"
)

func TestRecordRoundTripAndLiveness(t *testing.T) {
	dir := t.TempDir()
	self, err := microvm.ProcessOf(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	r := record{Version: stateVersion, ID: "x", Process: self, StateDir: dir, Args: []string{"-m", "1"}}
	if err := r.save(); err != nil {
		t.Fatal(err)
	}
	back, err := loadRecord(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !back.Alive() {
		t.Error("a record of this process is not alive")
	}
	back.Start++
	if back.Alive() {
		t.Error("a reused pid counts as alive")
	}
	back.Pid = 0
	if back.Alive() {
		t.Error("pid 0 counts as alive")
	}
	r.Version = stateVersion + 1
	_ = r.save()
	if _, err := loadRecord(dir); err == nil {
		t.Error("loaded a record of another version")
	}
}

// Recovering a sandbox whose QEMU is gone cleans up and says not found.
func TestRecoverGone(t *testing.T) {
	dir := t.TempDir()
	r := record{Version: stateVersion, ID: "gone", Process: microvm.Process{Pid: 1 << 22, Start: 1}, StateDir: dir}
	if err := r.save(); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(paths(dir).disk, []byte("x"), 0o600)
	d := New(Config{DataDir: t.TempDir()}, slog.New(slog.DiscardHandler))
	_, err := d.Recover(context.Background(), runtime.Spec{ID: "gone", StateDir: dir})
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("recover: %v, want ErrNotFound", err)
	}
	if _, err := os.Stat(paths(dir).disk); !errors.Is(err, os.ErrNotExist) {
		t.Error("the disk of a gone sandbox survived Recover")
	}
	if _, err := d.Recover(context.Background(), runtime.Spec{ID: "gone", StateDir: dir}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("second recover: %v", err)
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
	line := d.cmdline(runtime.Spec{ID: "sb1", Env: map[string]string{"A": "1"}})
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
