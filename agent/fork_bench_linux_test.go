package agent_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"roost.dev/roost/agent"
)

// forkBenchFiles is what the forked sandbox wrote before the fork.
const forkBenchFiles = 200 << 20

// BenchmarkForkNamespace forks a namespace sandbox that wrote 200 MB of
// files into 10 sandboxes at once (E2B's fork with count 10), each ready
// with the files and the source's process, and reports the time of the
// whole fork, the disk each fork's own disk takes before it writes, and
// the one copy of the source's disk the capture keeps for all of them
// (a copy-on-write clone on filesystems that have them; a copy on ext4).
// Beside them, in the same run: the source's disk copied 10 times, which
// a fork without layers would do.
func BenchmarkForkNamespace(b *testing.B) {
	const forks = 10
	h := newHost(b)
	h.slotHi = h.slotLo + 3*forks
	a := h.start()
	src, err := a.m.Create(ctxT(b), agent.CreateRequest{Timeout: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	mustExecB(b, src.Envd.String(), fmt.Sprintf("head -c %d /dev/urandom > /home/user/data && { nohup sleep 100000 >/dev/null 2>&1 & }", forkBenchFiles))
	srcDisk := filepath.Join(h.dataDir, "sandboxes", src.ID, "disk.img")

	var forkTime, copyTime time.Duration
	var ownBytes, sharedBytes int64
	for b.Loop() {
		reqs := make([]agent.CreateRequest, forks)
		for i := range reqs {
			reqs[i].Timeout = time.Hour
		}
		t0 := time.Now()
		outs, err := a.m.Fork(ctxT(b), src.ID, reqs)
		forkTime += time.Since(t0)
		if err != nil {
			b.Fatal(err)
		}
		for i, o := range outs {
			if o.Err != nil {
				b.Fatalf("fork %d: %v", i, o.Err)
			}
			dir := filepath.Join(h.dataDir, "sandboxes", o.Sandbox.ID)
			if out := mustExecOut(b, o.Sandbox.Envd.String(), "stat -c %s /home/user/data; pgrep -c -x sleep"); out != fmt.Sprintf("%d\n1\n", forkBenchFiles) {
				b.Fatalf("fork %d: %q, want the source's file and process", i, out)
			}
			ownBytes += allocated(b, filepath.Join(dir, "disk.img"))
			if i == 0 {
				sharedBytes += allocated(b, filepath.Join(dir, "layer-0.img"))
			}
		}
		for _, o := range outs {
			if err := a.m.Destroy(ctxT(b), o.Sandbox.ID); err != nil {
				b.Fatal(err)
			}
		}
		copyTime += copies(b, srcDisk, forks)
	}
	rounds := float64(b.N)
	b.ReportMetric(forkTime.Seconds()/rounds, "fork-10-s")
	b.ReportMetric(copyTime.Seconds()/rounds, "copy-10-s")
	b.ReportMetric(float64(ownBytes)/rounds/forks/(1<<20), "own-disk-MiB-per-fork")
	b.ReportMetric(float64(sharedBytes)/rounds/(1<<20), "shared-capture-MiB")
	b.ReportMetric(float64(allocated(b, srcDisk))/(1<<20), "source-disk-MiB")
}

// copies copies the disk image src n times (cp, sparse) into a directory
// of the same filesystem, as a fork without layers would, and returns the
// time they took.
func copies(b *testing.B, src string, n int) time.Duration {
	b.Helper()
	dir, err := os.MkdirTemp(filepath.Dir(src), "copies-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	t0 := time.Now()
	for i := range n {
		if out, err := exec.Command("cp", "--sparse=always", src, filepath.Join(dir, fmt.Sprint(i))).CombinedOutput(); err != nil {
			b.Fatalf("cp: %v: %s", err, out)
		}
	}
	return time.Since(t0)
}

// allocated is the disk a file takes on the host.
func allocated(b *testing.B, path string) int64 {
	b.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		b.Fatal(err)
	}
	return st.Blocks * 512
}

func mustExecOut(b *testing.B, envd, script string) string {
	b.Helper()
	out, code, err := execIn(ctxT(b), envd, "", script)
	if err != nil || code != 0 {
		b.Fatalf("exec %q: exit %d, %v: %s", script, code, err, strings.TrimSpace(out))
	}
	return out
}
