package microvm

import (
	"os"
	"path/filepath"
	"testing"

	"roost.dev/roost/runtime"
)

// VMM uids are claimed lowest first, one per sandbox, survive a new pool
// (an agent restart), are given back only by their holder, and pruned
// when their sandbox is gone.
func TestUIDPool(t *testing.T) {
	p := uidPool{dir: filepath.Join(t.TempDir(), "uids"), base: UIDBase}
	a, err := p.claim("a")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := p.claim("b")
	if a != UIDBase || b != UIDBase+1 {
		t.Fatalf("claimed %d, %d; want %d, %d", a, b, UIDBase, UIDBase+1)
	}
	again := uidPool{dir: p.dir, base: UIDBase} // after an agent restart
	if c, _ := again.claim("c"); c != UIDBase+2 {
		t.Errorf("a restarted pool handed out %d, held by a running sandbox", c)
	}
	if err := again.release(a, "not-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p.path(a)); err != nil {
		t.Error("a sandbox gave back another's uid")
	}
	if err := p.release(a, "a"); err != nil {
		t.Fatal(err)
	}
	if n, _ := p.claim("d"); n != a {
		t.Errorf("released uid not reused: got %d", n)
	}
	if err := p.prune(func(id string) bool { return id == "d" }); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(p.dir)
	if len(ents) != 1 || ents[0].Name() != "536870912" {
		t.Errorf("after prune: %v, want only d's claim", ents)
	}
	if _, err := (uidPool{}).claim("x"); err == nil {
		t.Error("a pool without a directory claimed a uid")
	}
}

// A VMM's cgroup bounds its guest's memory plus the VMM's overhead, its
// vCPUs plus half a CPU, and its tasks.
func TestVMMLimits(t *testing.T) {
	l := VMMLimits(runtime.Limits{VCPUs: 2, MemoryMB: 512}, 192)
	if l.MemoryBytes != (512+192)<<20 || l.CPUs != 2.5 || l.Pids != 130 {
		t.Errorf("limits %+v", l)
	}
	if l := VMMLimits(runtime.Limits{}, 192); l.MemoryBytes != 0 || l.CPUs != 0 || l.Pids == 0 {
		t.Errorf("limits of an older agent's state (no vcpus, no memory): %+v", l)
	}
}
