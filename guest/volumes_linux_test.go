package guest

import (
	"os"
	"path/filepath"
	"testing"
)

// TestDeviceOfSerial: the init finds a volume's device by the serial in
// /sys/block/*/serial (virtio-blk's, padded with nothing or a newline).
func TestDeviceOfSerial(t *testing.T) {
	sys := t.TempDir()
	for dev, serial := range map[string]string{"vda": "", "vdb": "roostvol1\n", "vdc": "roostvol0", "loop0": ""} {
		if err := os.MkdirAll(filepath.Join(sys, dev), 0o755); err != nil {
			t.Fatal(err)
		}
		if serial != "" {
			if err := os.WriteFile(filepath.Join(sys, dev, "serial"), []byte(serial), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for serial, want := range map[string]string{"roostvol0": "vdc", "roostvol1": "vdb", "roostvol2": "", "": ""} {
		if got := deviceOfSerial(sys, serial); got != want {
			t.Errorf("deviceOfSerial(%q) = %q, want %q", serial, got, want)
		}
	}
}
