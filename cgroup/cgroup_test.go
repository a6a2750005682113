package cgroup

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"roost.dev/roost/errdefs"
)

func TestDetect(t *testing.T) {
	h, err := Detect()
	if err != nil {
		t.Skipf("no usable cgroup hierarchy: %v", err)
	}
	if v := h.Version(); v != 1 && v != 2 {
		t.Fatalf("Version() = %d", v)
	}
	t.Logf("detected %s", h)
	if ok, _ := isCgroup2(defaultRoot); !ok && h.Version() != 1 {
		t.Errorf("%s is not cgroup2 but Detect chose v%d", defaultRoot, h.Version())
	}
}

func TestDetectAtNothing(t *testing.T) {
	_, err := DetectAt(t.TempDir())
	if !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("DetectAt(empty dir) = %v, want ErrUnavailable", err)
	}
	t.Logf("error reads: %v", err)
}

func TestLifecycle(t *testing.T) {
	for _, v := range variants(t, false) {
		t.Run(v.name, func(t *testing.T) {
			h := v.h
			parent := testParent(t, h)
			a, b := parent+"/a", parent+"/b"
			ga := create(t, h, a, Limits{})
			create(t, h, b, Limits{})

			if _, err := h.Create(a, Limits{}); !errors.Is(err, errdefs.ErrConflict) {
				t.Errorf("Create of an existing group = %v, want ErrConflict", err)
			}
			if _, err := h.Create("system.slice", Limits{}); !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("Create(system.slice) = %v, want ErrInvalid", err)
			}
			got, err := h.List(parent)
			if err != nil || !slices.Equal(got, []string{a, b}) {
				t.Errorf("List = %v, %v; want [%s %s]", got, err, a, b)
			}
			if got, err := h.List(parent + "/missing"); err != nil || len(got) != 0 {
				t.Errorf("List(missing) = %v, %v; want nothing", got, err)
			}
			loaded, err := h.Load(a)
			if err != nil {
				t.Fatalf("Load(%s): %v", a, err)
			}
			if loaded.Name() != a || !slices.Equal(loaded.dirs, ga.dirs) {
				t.Errorf("Load = %s %v, want %s %v", loaded.Name(), loaded.dirs, a, ga.dirs)
			}
			if _, err := h.Load(parent + "/missing"); !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("Load(missing) = %v, want ErrNotFound", err)
			}

			// A process in the group goes with Delete.
			p := start(t, ga, nil, "sleep", "1000")
			eventually(t, "the process to show in Procs", func() bool {
				return slices.Contains(procs(t, ga), p.cmd.Process.Pid)
			})
			if err := ga.Delete(ctxFor(t)); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			for _, d := range ga.dirs {
				if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("Delete left %s (%v)", d, err)
				}
			}
			if err := p.cmd.Wait(); err == nil {
				t.Error("the process in the deleted group exited cleanly; want killed")
			}
			if err := ga.Delete(ctxFor(t)); err != nil {
				t.Errorf("second Delete = %v, want nil", err)
			}
			if _, err := h.Load(a); !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("Load after Delete = %v, want ErrNotFound", err)
			}
			if _, err := ga.Procs(); !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("Procs after Delete = %v, want ErrNotFound", err)
			}
			if got, err := h.List(parent); err != nil || !slices.Equal(got, []string{b}) {
				t.Errorf("List after Delete = %v, %v; want [%s]", got, err, b)
			}
		})
	}
}

// TestPartialGroup covers a crash mid-Create or mid-Delete: a group left
// in only some hierarchies loads, and Delete removes the rest.
func TestPartialGroup(t *testing.T) {
	requireRoot(t)
	h := detected(t)
	parent := testParent(t, h)
	g := create(t, h, parent+"/partial", Limits{})
	if len(g.dirs) < 2 {
		t.Skipf("the group lives in one hierarchy only (%v)", g.dirs)
	}
	if err := syscall.Rmdir(g.dirs[0]); err != nil {
		t.Fatal(err)
	}
	loaded, err := h.Load(g.Name())
	if err != nil {
		t.Fatalf("Load of a partial group: %v", err)
	}
	if err := loaded.Delete(ctxFor(t)); err != nil {
		t.Fatalf("Delete of a partial group: %v", err)
	}
	for _, d := range g.dirs {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Delete left %s", d)
		}
	}
}

func TestMemoryLimitOOM(t *testing.T) {
	requireRoot(t)
	h := detected(t)
	const limit = 64 << 20
	g := create(t, h, testParent(t, h)+"/hog", Limits{MemoryBytes: limit})

	p := helper(t, g, "hog")
	err := p.cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("hog ended with %v (output %q); want killed by SIGKILL", err, p.output(t))
	}
	s := stats(t, g)
	t.Logf("after the hog: %+v", s)
	if s.OOMKills < 1 {
		t.Errorf("OOMKills = %d, want at least 1", s.OOMKills)
	}
	if s.MemoryLimit != limit {
		t.Errorf("MemoryLimit = %d, want %d", s.MemoryLimit, limit)
	}
	// The test process, outside the group, is untouched and can still
	// allocate what the hog could not.
	b := make([]byte, 200<<20)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
}

func TestPidsLimit(t *testing.T) {
	requireRoot(t)
	out, err := exec.Command("python3", "-c", "import sys; print(sys.executable)").Output()
	if err != nil {
		t.Skipf("needs python3 for a fork bomb that reports errno: %v", err)
	}
	python := strings.TrimSpace(string(out))
	h := detected(t)
	const limit = 16
	g := create(t, h, testParent(t, h)+"/forkbomb", Limits{Pids: limit})

	// Forks sleepers until fork fails, then reports errno and count.
	const bomb = `
import os, time
n = 0
try:
    while n < 1000:
        if os.fork() == 0:
            time.sleep(1000)
            os._exit(0)
        n += 1
except OSError as e:
    print(e.errno, n, flush=True)
time.sleep(1000)
`
	p := start(t, g, nil, python, "-c", bomb)
	var errno, forked int
	eventually(t, "the fork bomb to hit the limit", func() bool {
		_, err := fmt.Sscan(p.output(t), &errno, &forked)
		return err == nil
	})
	if errno != int(syscall.EAGAIN) {
		t.Errorf("fork failed with errno %d, want EAGAIN (%d)", errno, syscall.EAGAIN)
	}
	if forked < 1 || forked > limit-1 {
		t.Errorf("forked %d children, want between 1 and %d", forked, limit-1)
	}
	s := stats(t, g)
	t.Logf("fork failed with errno %d after %d children; group tasks %d (limit %d)", errno, forked, s.Pids, limit)
	if s.Pids > limit {
		t.Errorf("Stats.Pids = %d, above pids.max %d", s.Pids, limit)
	}
	// The host side still forks.
	if err := exec.Command("true").Run(); err != nil {
		t.Errorf("fork outside the group: %v", err)
	}
}

func TestCPULimit(t *testing.T) {
	requireRoot(t)
	h := detected(t)
	g := create(t, h, testParent(t, h)+"/spin", Limits{CPUs: 0.2})

	helper(t, g, "spin")
	eventually(t, "the spinner to use CPU", func() bool { return stats(t, g).CPUUsage > 0 })
	u0, t0 := stats(t, g).CPUUsage, time.Now()
	time.Sleep(2 * time.Second)
	u1, t1 := stats(t, g).CPUUsage, time.Now()
	share := float64(u1-u0) / float64(t1.Sub(t0))
	t.Logf("busy loop limited to 0.2 CPUs used %.3f CPUs over %v", share, t1.Sub(t0).Round(time.Millisecond))
	// A limit check with a generous bound, not a timing test.
	if share <= 0 || share >= 0.5 {
		t.Errorf("busy loop used %.3f CPUs, want more than 0 and under 0.5", share)
	}
}

func TestFreezeThaw(t *testing.T) {
	for _, v := range variants(t, false) {
		t.Run(v.name, func(t *testing.T) {
			g := create(t, v.h, testParent(t, v.h)+"/counter", Limits{})
			path := filepath.Join(t.TempDir(), "count")
			helper(t, g, "counter", counterEnv+"="+path)
			eventually(t, "the counter to start", func() bool { return readCounter(t, path) > 0 })

			if err := g.Freeze(ctxFor(t)); err != nil {
				t.Fatalf("Freeze: %v", err)
			}
			frozen := readCounter(t, path)
			time.Sleep(200 * time.Millisecond) // the counter would move ~100 times
			if after := readCounter(t, path); after != frozen {
				t.Fatalf("counter moved from %d to %d while frozen", frozen, after)
			}
			if err := g.Freeze(ctxFor(t)); err != nil {
				t.Errorf("second Freeze: %v", err)
			}
			if err := g.Thaw(ctxFor(t)); err != nil {
				t.Fatalf("Thaw: %v", err)
			}
			eventually(t, "the counter to move after Thaw", func() bool { return readCounter(t, path) > frozen })
			t.Logf("counter held at %d while frozen, then resumed", frozen)
		})
	}
}

func TestKill(t *testing.T) {
	// A process tree, with a loop that keeps forking.
	const tree = `sleep 1000 & sleep 1000 & sh -c 'sleep 1000 & sleep 1000 & wait' &
while :; do sleep 1000 & sleep 0.01; done`
	for _, v := range variants(t, true) {
		for _, frozen := range []bool{false, true} {
			name := v.name
			if frozen {
				name += "/frozen"
			}
			t.Run(name, func(t *testing.T) {
				g := create(t, v.h, testParent(t, v.h)+"/tree", Limits{})
				p := start(t, g, nil, "sh", "-c", tree)
				eventually(t, "the tree to grow", func() bool { return len(procs(t, g)) >= 8 })
				if frozen {
					if err := g.Freeze(ctxFor(t)); err != nil {
						t.Fatalf("Freeze: %v", err)
					}
				}
				n := len(procs(t, g))
				if err := g.Kill(ctxFor(t)); err != nil {
					t.Fatalf("Kill: %v", err)
				}
				if left := procs(t, g); len(left) != 0 {
					t.Fatalf("Kill returned with %v in the group", left)
				}
				if err := p.cmd.Wait(); err == nil {
					t.Error("the tree's root exited cleanly; want killed")
				}
				t.Logf("killed %d+ processes", n)
				// The group stays usable: empty and thawed.
				q := start(t, g, nil, "sleep", "1000")
				eventually(t, "a new process in the group", func() bool { return len(procs(t, g)) == 1 })
				if err := g.Kill(ctxFor(t)); err != nil {
					t.Fatalf("second Kill: %v", err)
				}
				_ = q.cmd.Wait()
			})
		}
	}
}

func TestStats(t *testing.T) {
	for _, v := range variants(t, false) {
		t.Run(v.name, func(t *testing.T) {
			g := create(t, v.h, testParent(t, v.h)+"/stats", Limits{})
			start(t, g, nil, "sh", "-c", "sleep 1000 & sleep 1000 & i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; wait")
			eventually(t, "three tasks and some CPU", func() bool {
				s := stats(t, g)
				return s.Pids == 3 && s.CPUUsage > 0
			})
			s := stats(t, g)
			t.Logf("%+v", s)
			if s.MemoryLimit != 0 || s.OOMKills != 0 {
				t.Errorf("unlimited fresh group: MemoryLimit %d, OOMKills %d; want 0, 0", s.MemoryLimit, s.OOMKills)
			}
		})
	}
}

// TestMissingController runs where the v2 tree has no controllers (the
// hybrid host's unified tree): a limit fails naming its controller and
// leaves nothing behind; a zero limit needs no controller.
func TestMissingController(t *testing.T) {
	requireRoot(t)
	u := unified(t)
	if u == nil {
		t.Skip("no cgroup2 tree at /sys/fs/cgroup/unified")
	}
	parent := testParent(t, u)
	tests := []struct {
		l          Limits
		controller string
	}{
		{Limits{MemoryBytes: 64 << 20}, "memory"},
		{Limits{CPUs: 0.5}, "cpu"},
		{Limits{Pids: 10}, "pids"},
	}
	for _, tt := range tests {
		missing, err := missingControllers(u.v2, []string{tt.controller})
		if err != nil {
			t.Fatal(err)
		}
		if len(missing) == 0 {
			t.Logf("%s has the %s controller; nothing to check", u.v2, tt.controller)
			continue
		}
		_, err = u.Create(parent+"/limited", tt.l)
		if !errors.Is(err, errdefs.ErrUnsupported) || !strings.Contains(err.Error(), tt.controller+" controller") {
			t.Errorf("Create with %+v = %v; want ErrUnsupported naming the %s controller", tt.l, err, tt.controller)
		} else {
			t.Logf("error reads: %v", err)
		}
		if got, _ := u.List(parent); len(got) != 0 {
			t.Errorf("a failed Create left %v", got)
		}
	}
	create(t, u, parent+"/unlimited", Limits{})
}
