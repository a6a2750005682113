package agent_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/agent"
	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
	"roost.dev/roost/template/content"
	"roost.dev/roost/template/templatetest"
)

// TestHaltQEMU: a qemu sandbox paused without its memory keeps its files
// and boots afresh on resume, with its env vars and envd token.
func TestHaltQEMU(t *testing.T) {
	if testing.Short() {
		t.Skip("boots VMs")
	}
	testHalt(t, qemuHost(t))
}

// TestHaltNamespace: a namespace sandbox paused without its memory keeps
// its files and boots afresh on resume (its own new boot id), with its
// env vars and envd token.
func TestHaltNamespace(t *testing.T) {
	testHalt(t, newHost(t))
}

// testHalt pauses a sandbox without its memory (E2B's keepMemory: false):
// its processes end, its files stay; traffic's resume is refused, an
// explicit one boots it afresh (a new boot id) with its env vars and
// token, also after the agent restarted in between.
func testHalt(t *testing.T, h *host) {
	a := h.start()
	sb, err := a.m.Create(ctxT(t), agent.CreateRequest{EnvdToken: "halt-token", Limits: runtime.Limits{MemoryMB: 256},
		EnvVars: map[string]string{"GREETING": "kept-across-boots"}})
	if err != nil {
		t.Fatal(err)
	}
	bootID := func(sb agent.Sandbox) string {
		t.Helper()
		return strings.TrimSpace(mustExec(t, sb.Envd.String(), "halt-token", "cat /proc/sys/kernel/random/boot_id"))
	}
	before := bootID(sb)
	mustExec(t, sb.Envd.String(), "halt-token", "echo kept > /home/user/file; nohup sleep 1000 >/dev/null 2>&1 &")

	halted, err := a.m.Halt(ctxT(t), sb.ID)
	if err != nil {
		t.Fatalf("halt: %v", err)
	}
	if halted.State != agent.StatePaused || !halted.Halted || halted.Hibernated {
		t.Fatalf("halted sandbox: %+v", halted)
	}
	if _, err := a.m.Halt(ctxT(t), sb.ID); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("halt twice: %v, want a conflict", err)
	}
	if _, err := a.m.Resume(ctxT(t), sb.ID, 0, true); !errors.Is(err, errdefs.ErrConflict) || !strings.Contains(err.Error(), "without its memory") {
		t.Fatalf("traffic's resume of a halted sandbox: %v, want refused", err)
	}

	// The agent restarts while the sandbox is halted: it is kept.
	a.stop()
	a = h.start()
	if got, err := a.m.Get(sb.ID); err != nil || !got.Halted {
		t.Fatalf("after an agent restart: %+v, %v", got, err)
	}
	began := time.Now()
	resumed, err := a.m.Resume(ctxT(t), sb.ID, time.Minute, false)
	if err != nil {
		t.Fatalf("resume: %v", err)
	}
	t.Logf("boot of the halted sandbox: %v", time.Since(began))
	if resumed.State != agent.StateRunning || resumed.Halted {
		t.Fatalf("resumed: %+v", resumed)
	}
	if after := bootID(resumed); after == before || after == "" {
		t.Errorf("boot id %q after the resume, %q before: want a new boot", after, before)
	}
	out := mustExec(t, resumed.Envd.String(), "halt-token", "cat /home/user/file; echo $GREETING; pgrep -x sleep || echo no-sleep")
	if out != "kept\nkept-across-boots\nno-sleep\n" {
		t.Errorf("after the boot: %q, want the file, the env var and no process of before", out)
	}
	if err := a.m.Destroy(ctxT(t), sb.ID); err != nil {
		t.Fatal(err)
	}
}

// TestSnapshotQEMU: a snapshot of a qemu sandbox is its template's layers
// and one layer of what it changed on its disk, read from an export of
// the disk: the files it wrote, whiteouts for those it removed, and none
// of the VM image's own files or the runtime's identity files. The
// sandbox runs on.
func TestSnapshotQEMU(t *testing.T) {
	if testing.Short() {
		t.Skip("boots VMs")
	}
	h := qemuHost(t)
	blobs := content.NewBlobs(filepath.Join(h.dataDir, "blobs"))
	a := h.startWithConfig(templatetest.Store(t), func(c *agent.Config) { c.Blobs, c.SharedBlobs = blobs, true })
	sb, err := a.m.Create(ctxT(t), agent.CreateRequest{Limits: runtime.Limits{MemoryMB: 256}})
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, sb.Envd.String(), "", "echo snapshot-me > /home/user/f; rm /home/user/.bash_logout")
	man, _, err := a.m.Snapshot(ctxT(t), sb.ID, map[string]string{"SNAP": "1"})
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	if len(man.Layers) != 2 || man.Config.Env["SNAP"] != "1" {
		t.Fatalf("manifest %+v: want the base's layer and one more, and the env var", man)
	}
	entries := layerEntries(t, blobs, man.Layers[1].Digest)
	if entries["home/user/f"] != "snapshot-me\n" {
		t.Errorf("layer lacks the written file: %d entries", len(entries))
	}
	if _, ok := entries["home/user/.wh..bash_logout"]; !ok {
		t.Errorf("layer lacks the whiteout of the removed file")
	}
	for _, absent := range []string{".roost", ".roost/envd", "etc/hostname", "lost+found"} {
		if _, ok := entries[absent]; ok {
			t.Errorf("layer has %s", absent)
		}
	}
	if man.Layers[1].Size > 64<<20 {
		t.Errorf("layer of %d bytes for a few changed files", man.Layers[1].Size)
	}
	if got, err := a.m.Get(sb.ID); err != nil || got.State != agent.StateRunning {
		t.Fatalf("after the snapshot: %+v, %v", got, err)
	}
	mustExec(t, sb.Envd.String(), "", "echo still-running")
}
