package cgroup

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/errdefs"
)

// helperEnv selects what the re-executed test binary does instead of
// running tests: "hog", "counter" or "spin".
const helperEnv = "ROOST_CGROUP_TEST_HELPER"

// counterEnv names the file the "counter" helper keeps its count in.
const counterEnv = "ROOST_CGROUP_TEST_COUNTER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "hog":
		hog()
	case "counter":
		counter(os.Getenv(counterEnv))
	case "spin":
		spin()
	default:
		fmt.Fprintf(os.Stderr, "unknown helper %q\n", os.Getenv(helperEnv))
		os.Exit(2)
	}
}

// spin burns CPU until it is killed, for the CPU limit test to measure.
func spin() {
	for n := uint64(0); ; n++ {
	}
}

// hog allocates and touches 200 MiB, 1 MiB at a time, and reports if it
// survives.
func hog() {
	var keep [][]byte
	for range 200 {
		b := make([]byte, 1<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		keep = append(keep, b)
	}
	fmt.Println("survived", len(keep))
	os.Exit(0)
}

// counter writes an ever-growing count to path every 2 ms; rename makes
// each update atomic for the reader.
func counter(path string) {
	tmp := path + ".tmp"
	for n := 1; ; n++ {
		if err := os.WriteFile(tmp, []byte(strconv.Itoa(n)), 0o644); err != nil {
			os.Exit(3)
		}
		if err := os.Rename(tmp, path); err != nil {
			os.Exit(3)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func readCounter(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(string(b))
	if err != nil {
		t.Fatalf("counter %q: %v", b, err)
	}
	return n
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create cgroups")
	}
}

// variant is a hierarchy under test.
type variant struct {
	name string
	h    *Hierarchy
}

// detected is the host's own hierarchy.
func detected(t *testing.T) *Hierarchy {
	t.Helper()
	h, err := Detect()
	if err != nil {
		t.Skipf("no usable cgroup hierarchy: %v", err)
	}
	return h
}

// unified is the hybrid host's v2 tree, used as a v2 hierarchy of its own
// (no controllers, but freeze, kill, procs and groups work); nil when the
// host has no such tree.
func unified(t *testing.T) *Hierarchy {
	t.Helper()
	root := filepath.Join(defaultRoot, "unified")
	if ok, _ := isCgroup2(root); !ok {
		return nil
	}
	h, err := DetectAt(root)
	if err != nil {
		t.Fatalf("DetectAt(%s): %v", root, err)
	}
	return h
}

// variants are the detected hierarchy and, on hybrid hosts, the unified
// tree; withoutKill adds copies that may not use cgroup.kill, to exercise
// the freeze-and-signal path.
func variants(t *testing.T, withoutKill bool) []variant {
	t.Helper()
	requireRoot(t)
	h := detected(t)
	out := []variant{{fmt.Sprintf("v%d", h.Version()), h}}
	if u := unified(t); u != nil && !(h.Version() == 2 && h.v2 == u.v2) {
		out = append(out, variant{"unified", u})
	}
	if withoutKill {
		for _, v := range out[:len(out):len(out)] {
			nk := *v.h
			nk.useKill = false
			out = append(out, variant{v.name + "-nokill", &nk})
		}
	}
	return out
}

// testParent returns a fresh parent name and removes it, with every group
// under it, when the test ends.
func testParent(t *testing.T, h *Hierarchy) string {
	t.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	parent := "roost-test-" + hex.EncodeToString(b)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		children, err := h.List(parent)
		if err != nil {
			t.Errorf("cleanup: %v", err)
		}
		for _, c := range children {
			if g, err := h.Load(c); err == nil {
				if err := g.Delete(ctx); err != nil {
					t.Errorf("cleanup: %v", err)
				}
			}
		}
		if g, err := h.Load(parent); err == nil {
			if err := g.Delete(ctx); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
		for _, m := range h.mounts() {
			if _, err := os.Stat(filepath.Join(m, parent)); err == nil {
				t.Errorf("cleanup left %s", filepath.Join(m, parent))
			}
		}
	})
	return parent
}

// create makes group name and deletes it when the test ends; the test
// skips when the host lacks a controller l needs.
func create(t *testing.T, h *Hierarchy, name string, l Limits) *Group {
	t.Helper()
	g, err := h.Create(name, l)
	if errors.Is(err, errdefs.ErrUnsupported) {
		t.Skipf("this host cannot apply %+v: %v", l, err)
	}
	if err != nil {
		t.Fatalf("Create(%s): %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := g.Delete(ctx); err != nil {
			t.Errorf("Delete(%s): %v", name, err)
		}
	})
	return g
}

// proc is a process started inside a group.
type proc struct {
	cmd *exec.Cmd
	out string // file holding its stdout and stderr
}

// start runs argv inside g: a shell waits on stdin until the process is in
// the group, then execs argv, so nothing it forks starts outside.
func start(t *testing.T, g *Group, env []string, argv ...string) *proc {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("sh", append([]string{"-c", `read -r _ && exec "$0" "$@"`}, argv...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, out: out}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	if err := g.AddProc(cmd.Process.Pid); err != nil {
		t.Fatalf("AddProc: %v", err)
	}
	if _, err := stdin.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	stdin.Close()
	return p
}

// helper runs the test binary as the named helper inside g.
func helper(t *testing.T, g *Group, mode string, env ...string) *proc {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return start(t, g, append(env, helperEnv+"="+mode), self)
}

func (p *proc) output(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(p.out)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// eventually polls cond for up to 30 s; a test waits on a condition, it
// never asserts how long the condition took.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := poll(ctx, func() (bool, error) { return cond(), nil }); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func procs(t *testing.T, g *Group) []int {
	t.Helper()
	pids, err := g.Procs()
	if err != nil {
		t.Fatalf("Procs: %v", err)
	}
	return pids
}

func stats(t *testing.T, g *Group) Stats {
	t.Helper()
	s, err := g.Stats()
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	return s
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
