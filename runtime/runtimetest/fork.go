package runtimetest

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/network"
	"roost.dev/roost/runtime"
)

// captureFork checks a Forker: a capture of a running sandbox, taken
// while it runs on, starts two sandboxes that each have its files and its
// processes, carrying on from where they were, and are independent of
// each other, of the source and of the capture.
func captureFork(t *testing.T, rt runtime.Runtime, nets *network.Manager) {
	f, ok := rt.(runtime.Forker)
	if !ok {
		t.Skipf("%s cannot fork", rt.Name())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	src := Start(t, rt, nets, Options{Limits: runtime.Limits{MemoryMB: 256}})
	src.MustExec(t, "echo kept > /root/state; nohup bash -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.05; done' >/dev/null 2>&1 &")
	time.Sleep(300 * time.Millisecond)
	// A socket bound to the sandbox's own address as it is captured (as
	// envd's connections from its clients are): the forks have it, bound
	// to an address that is not theirs. A UDP socket connected to the
	// sandbox itself sends nothing.
	addr, _, err := net.SplitHostPort(strings.TrimPrefix(src.Envd, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	src.MustExec(t, "nohup bash -c 'exec 5<>/dev/udp/"+addr+"/9; exec sleep 1000' >/dev/null 2>&1 &")
	time.Sleep(100 * time.Millisecond)
	dir := filepath.Join(t.TempDir(), "capture")
	if err := f.Capture(ctx, src.Spec.ID, dir); err != nil {
		t.Fatalf("capture: %v", err)
	}
	captured := counter(t, src)
	if err := f.Capture(ctx, src.Spec.ID, dir); err == nil {
		t.Error("a second capture into an existing directory succeeded")
	}
	files := listing(t, dir)

	forks := []*Sandbox{
		Start(t, rt, nets, Options{Fork: dir}),
		Start(t, rt, nets, Options{Fork: dir, Limits: runtime.Limits{MemoryMB: 256}}),
	}
	for i, sb := range forks {
		if got := strings.TrimSpace(sb.MustExec(t, "cat /root/state")); got != "kept" {
			t.Errorf("fork %d: file %q, want the source's", i, got)
		}
		first := counter(t, sb)
		time.Sleep(300 * time.Millisecond)
		if second := counter(t, sb); first == 0 || second <= first {
			t.Errorf("fork %d: counter %d then %d: want the source's process counting on", i, first, second)
		}
		sb.MustExec(t, "echo fork-"+strconv.Itoa(i)+" > /root/state")
	}
	if got := strings.TrimSpace(forks[0].MustExec(t, "cat /root/state")); got != "fork-0" {
		t.Errorf("fork 0 sees %q: the forks share a disk", got)
	}
	if got := strings.TrimSpace(src.MustExec(t, "cat /root/state")); got != "kept" {
		t.Errorf("the source sees %q after the forks wrote", got)
	}
	if c := counter(t, src); c <= captured {
		t.Errorf("the source's counter is %d, %d at the capture: want it running on", c, captured)
	}
	for _, sb := range forks {
		if err := sb.Close(ctx); err != nil {
			t.Errorf("destroy fork: %v", err)
		}
	}
	if after := listing(t, dir); after != files {
		t.Errorf("the capture changed with its forks:\nbefore %s\nafter  %s", files, after)
	}

	// A fork has the captured sandbox's shape, or is refused.
	if _, err := TryStart(t, rt, nets, Options{Fork: dir, Limits: runtime.Limits{MemoryMB: 512}}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("fork with another memory size: %v, want ErrInvalid", err)
	}
	if _, err := TryStart(t, rt, nets, Options{Fork: filepath.Join(t.TempDir(), "none")}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("fork of no capture: %v, want ErrNotFound", err)
	}
}

// counter reads the number the sandbox's counting loop last wrote.
func counter(t *testing.T, sb *Sandbox) int {
	t.Helper()
	n, _ := strconv.Atoi(strings.TrimSpace(sb.MustExec(t, "cat /tmp/counter")))
	return n
}

// listing is the names, sizes and modification times of the files in dir.
func listing(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(e.Name() + " " + strconv.FormatInt(info.Size(), 10) + " " + info.ModTime().String() + "; ")
	}
	return b.String()
}
