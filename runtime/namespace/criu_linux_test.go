package namespace

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"roost.dev/roost/mountinfo"
)

// TestKerndatCache: where /run is not a tmpfs, CRIU cannot keep what it
// detected of the kernel, and the driver makes that cache for it; CRIU
// then loads it instead of detecting the kernel's features again.
func TestKerndatCache(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("CRIU needs root")
	}
	if !kerndatOnDisk() {
		t.Skipf("%s is a tmpfs: CRIU keeps its own cache there", kerndatRun)
	}
	tool := findCRIU("")
	if tool.err != nil {
		t.Skipf("no CRIU: %v", tool.err)
	}
	if err := os.Remove(kerndatCache); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if err := primeKerndat(tool.path); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(kerndatCache); err != nil || fi.Size() == 0 {
		t.Fatalf("no cache made: %v", err)
	}
	log := filepath.Join(t.TempDir(), "check.log")
	if out, err := exec.Command(tool.path, "check", "-v4", "-o", log).CombinedOutput(); err != nil {
		t.Fatalf("criu check: %v: %s", err, out)
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "Loaded kdat cache from "+kerndatCache) {
		t.Errorf("CRIU did not load the cache:\n%s", b)
	}
	mounts, err := mountinfo.Read()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mounts {
		if m.Source == "roost-kerndat" {
			t.Errorf("the tmpfs the cache was made on shows in the host's mounts: %+v", m)
		}
	}
}
