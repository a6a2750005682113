package namespace

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"testing"

	"roost.dev/roost/cgroup"
)

// TestFreezeOutsideVfork freezes a group of shells that start commands
// without pause (dash starts each with vfork) again and again: a plain
// freeze now and then catches one between its vfork and its child's exec,
// freezeOutsideVfork never does.
func TestFreezeOutsideVfork(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for cgroups")
	}
	dash, err := exec.LookPath("dash")
	if err != nil {
		t.Skip("no dash")
	}
	h, err := cgroup.Detect()
	if err != nil {
		t.Skip(err)
	}
	g, err := h.Create(fmt.Sprintf("roost-test-vfork-%d", os.Getpid()), cgroup.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t.Cleanup(func() { _ = g.Delete(ctx) })
	if g.FreezerDir() == "" {
		t.Skip("no cgroup freezer")
	}
	for range 2 {
		cmd := exec.Command(dash, "-c", "while :; do /bin/true; done")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		if err := g.AddProc(cmd.Process.Pid); err != nil {
			t.Fatal(err)
		}
	}
	inVforkNow := func() int {
		tid, err := frozenInVfork(ctx, g)
		if err != nil {
			t.Fatal(err)
		}
		return tid
	}
	const rounds = 300
	caught := 0
	for range rounds {
		if err := g.Freeze(ctx); err != nil {
			t.Fatal(err)
		}
		if inVforkNow() != 0 {
			caught++
		}
		if err := g.Thaw(ctx); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("plain freezes that caught a vfork: %d of %d", caught, rounds)
	for i := range rounds {
		if err := freezeOutsideVfork(ctx, g); err != nil {
			t.Fatal(err)
		}
		if tid := inVforkNow(); tid != 0 {
			t.Fatalf("round %d: thread %d frozen in a vfork", i, tid)
		}
		if err := g.Thaw(ctx); err != nil {
			t.Fatal(err)
		}
	}
}
