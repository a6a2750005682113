package agent_test

import (
	"archive/tar"
	"errors"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/agent"
	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
	"roost.dev/roost/template/content"
	"roost.dev/roost/template/templatetest"
)

// TestForkQEMU forks a running VM sandbox (see testFork).
func TestForkQEMU(t *testing.T) {
	if testing.Short() {
		t.Skip("boots VMs")
	}
	testFork(t, qemuHost(t))
}

// TestForkNamespace forks a running namespace sandbox (see testFork).
func TestForkNamespace(t *testing.T) {
	testFork(t, newHost(t))
}

// testFork forks a running sandbox twice: each fork has the sandbox's
// files and its processes running on from where they were, the
// environment its /init gave, and its own hostname, token and disk; the
// sandbox runs on. Forks that cannot start fail on their own, and what
// cannot be forked is refused.
func testFork(t *testing.T, h *host) {
	a := h.start()
	src, err := a.m.Create(ctxT(t), agent.CreateRequest{EnvdToken: "source-token", Limits: runtime.Limits{MemoryMB: 256},
		EnvVars: map[string]string{"GREETING": "from-the-source"}})
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, src.Envd.String(), "source-token", "echo kept > /tmp/state; "+
		"nohup bash -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/counter.new; mv /tmp/counter.new /tmp/counter; sleep 0.05; done' >/dev/null 2>&1 &")
	time.Sleep(300 * time.Millisecond)

	taken := testID("taken-")
	if _, err := a.m.Create(ctxT(t), agent.CreateRequest{ID: taken, Limits: runtime.Limits{MemoryMB: 256}}); err != nil {
		t.Fatal(err)
	}
	outs, err := a.m.Fork(ctxT(t), src.ID, []agent.CreateRequest{
		{EnvdToken: "fork-0", Timeout: time.Minute, Metadata: map[string]string{"fork": "0"}},
		{ID: taken, EnvdToken: "fork-1"},
		{EnvdToken: "fork-2", Timeout: time.Minute},
		{}, // no token of its own
	})
	if err != nil {
		t.Fatalf("fork: %v", err)
	}
	if len(outs) != 4 || !errors.Is(outs[1].Err, agent.ErrExists) || !errors.Is(outs[3].Err, errdefs.ErrInvalid) {
		t.Fatalf("fork outcomes %+v: want the second refused for its taken ID, the last for having no token", outs)
	}
	counter := func(sb agent.Sandbox, token string) int {
		t.Helper()
		n, _ := strconv.Atoi(strings.TrimSpace(mustExec(t, sb.Envd.String(), token, "cat /tmp/counter")))
		return n
	}
	for i, tok := range map[int]string{0: "fork-0", 2: "fork-2"} {
		o := outs[i]
		if o.Err != nil {
			t.Fatalf("fork %d: %v", i, o.Err)
		}
		fk := o.Sandbox
		if fk.ID == src.ID || fk.State != agent.StateRunning || fk.Template != src.Template || fk.Limits != src.Limits {
			t.Errorf("fork %d: %+v (source %+v)", i, fk, src)
		}
		got := strings.Fields(mustExec(t, fk.Envd.String(), tok, `cat /tmp/state; hostname; echo "$GREETING"`))
		if strings.Join(got, " ") != "kept "+fk.ID+" from-the-source" {
			t.Errorf("fork %d: state, hostname, env %q", i, got)
		}
		first := counter(fk, tok)
		time.Sleep(300 * time.Millisecond)
		if second := counter(fk, tok); first == 0 || second <= first {
			t.Errorf("fork %d: counter %d then %d: want the source's loop counting on", i, first, second)
		}
		if _, _, err := execIn(ctxT(t), fk.Envd.String(), "source-token", "true"); err == nil {
			t.Errorf("fork %d took the source's token", i)
		}
		mustExec(t, fk.Envd.String(), tok, "echo fork-"+strconv.Itoa(i)+" > /tmp/state")
	}
	if got := strings.TrimSpace(mustExec(t, src.Envd.String(), "source-token", "cat /tmp/state")); got != "kept" {
		t.Errorf("the source sees %q after its forks wrote", got)
	}
	if before := counter(src, "source-token"); func() int { time.Sleep(200 * time.Millisecond); return counter(src, "source-token") }() <= before {
		t.Error("the source stopped counting")
	}

	// What cannot be forked.
	if _, err := a.m.Fork(ctxT(t), "no-such-sandbox", []agent.CreateRequest{{}}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("fork of an unknown sandbox: %v", err)
	}
	if _, err := a.m.Fork(ctxT(t), src.ID, nil); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("no forks: %v", err)
	}
	if _, err := a.m.Pause(ctxT(t), src.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.m.Fork(ctxT(t), src.ID, []agent.CreateRequest{{}}); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("fork of a paused sandbox: %v", err)
	}
}

// TestSnapshotOfFork: a snapshot of a namespace fork has a layer of what
// its source wrote before the fork and one of what the fork wrote since,
// in that order, so that the fork's removal of a source's file hides it.
func TestSnapshotOfFork(t *testing.T) {
	h := newHost(t)
	blobs := content.NewBlobs(filepath.Join(h.dataDir, "blobs"))
	a := h.startWithConfig(templatetest.Store(t), func(c *agent.Config) { c.Blobs, c.SharedBlobs = blobs, true })
	src, err := a.m.Create(ctxT(t), agent.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, src.Envd.String(), "", "echo from-source > /home/user/a")
	outs, err := a.m.Fork(ctxT(t), src.ID, []agent.CreateRequest{{}})
	if err != nil || outs[0].Err != nil {
		t.Fatalf("fork: %v %+v", err, outs)
	}
	fk := outs[0].Sandbox
	mustExec(t, fk.Envd.String(), "", "rm /home/user/a; echo from-fork > /home/user/b")
	man, _, err := a.m.Snapshot(ctxT(t), fk.ID, nil)
	if err != nil {
		t.Fatalf("snapshot of the fork: %v", err)
	}
	if len(man.Layers) != 3 {
		t.Fatalf("manifest of %d layers: want the base's, the source's and the fork's", len(man.Layers))
	}
	source, fork := layerEntries(t, blobs, man.Layers[1].Digest), layerEntries(t, blobs, man.Layers[2].Digest)
	if source["home/user/a"] != "from-source\n" {
		t.Errorf("the source's layer lacks its file: %v", keys(source))
	}
	if _, ok := fork["home/user/.wh.a"]; !ok || fork["home/user/b"] != "from-fork\n" {
		t.Errorf("the fork's layer lacks its file or the whiteout of the source's: %v", keys(fork))
	}
}

// layerEntries reads the layer blob d: names (without a trailing slash)
// and contents.
func layerEntries(t *testing.T, blobs *content.Blobs, d content.Digest) map[string]string {
	t.Helper()
	f, err := blobs.Open(d)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	entries := map[string]string{}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return entries
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		entries[strings.TrimSuffix(hdr.Name, "/")] = string(b)
	}
}

func keys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }
