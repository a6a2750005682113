package firecracker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/microvm"
)

// TestForkAgainstFake captures a running sandbox and starts two forks of
// it, with the fake as Firecracker: the source runs on, each fork loads
// its own copies of the capture and gets its own identity in MMDS, and
// the capture stays as it was, through the forks and their destruction.
func TestForkAgainstFake(t *testing.T) {
	for _, diff := range []bool{false, true} {
		t.Run(map[bool]string{false: "full snapshots", true: "diff snapshots"}[diff], func(t *testing.T) {
			r := newTestRig(t, Config{DiffSnapshots: diff})
			d, spec := r.d, r.newSpec(t)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			inst, err := d.Create(ctx, spec)
			if err != nil {
				t.Fatalf("create: %v", err)
			}
			src := paths(spec.StateDir)
			var base uint64
			if diff {
				// Hibernated and restored once, the source keeps a
				// base for its diff snapshots.
				st, err := d.Snapshot(ctx, spec.ID)
				if err != nil {
					t.Fatalf("snapshot: %v", err)
				}
				if inst, err = d.Restore(ctx, spec, st); err != nil {
					t.Fatalf("restore: %v", err)
				}
				base = inode(t, src.memory)
			}

			dir := filepath.Join(r.dir, "captures", "c1")
			os.MkdirAll(filepath.Dir(dir), 0o700)
			if err := d.Capture(ctx, spec.ID, dir); err != nil {
				t.Fatalf("capture: %v", err)
			}
			if s := runState(t, spec.StateDir); s != "Running" {
				t.Errorf("source is %s after the capture, want Running", s)
			}
			names := dirNames(t, dir)
			if want := []string{"capture.json", captureMemory, captureDisk, captureVMState}; !slices.Equal(names, want) {
				t.Errorf("capture holds %v, want %v", names, want)
			}
			if names := dirNames(t, jailDir(spec.StateDir)); slices.Contains(names, "capture.snap") || slices.Contains(names, "capture.mem") {
				t.Errorf("capture files left in the source's jail: %v", names)
			}
			if diff {
				// The capture's full snapshot is the source's new base.
				got, _ := os.ReadFile(src.memory)
				want, _ := os.ReadFile(filepath.Join(dir, captureMemory))
				if inode(t, src.memory) == base || !bytes.Equal(got, want) {
					t.Error("the source's diff base is not the capture's memory")
				}
			}
			before := digest(t, dir)

			var forks []runtime.Spec
			var pids []int
			for i := range 2 {
				f := r.newSpec(t)
				f.Metadata = map[string]string{"fork": fmt.Sprint(i)}
				fi, err := d.Fork(ctx, f, dir)
				if err != nil {
					t.Fatalf("fork %d: %v", i, err)
				}
				if fi.Pid == 0 || fi.Pid == inst.Pid || fi.Envd.Addr() != f.Network.Address.Addr() {
					t.Errorf("fork %d: instance %+v", i, fi)
				}
				if s := runState(t, f.StateDir); s != "Running" {
					t.Errorf("fork %d is %s, want Running", i, s)
				}
				p := paths(f.StateDir)
				if exists(p.vmstate) || !exists(p.disk) || exists(p.memory) != diff {
					t.Errorf("fork %d: jail holds %v: want its disk, and its memory only as a diff base", i, dirNames(t, jailDir(f.StateDir)))
				}
				forks, pids = append(forks, f), append(pids, fi.Pid)
			}

			bad := forks[0]
			bad.ID, bad.StateDir = "fc-bad", filepath.Join(r.dir, "sandboxes", "fc-bad")
			bad.Limits.MemoryMB = 2 * microvm.DefaultLimits.MemoryMB
			if _, err := d.Fork(ctx, bad, dir); !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("fork with %d MiB of a %d MiB capture: %v, want ErrInvalid", bad.Limits.MemoryMB, microvm.DefaultLimits.MemoryMB, err)
			}

			if err := d.Destroy(ctx, forks[0].ID); err != nil {
				t.Fatalf("destroy fork: %v", err)
			}
			if exists(paths(forks[0].StateDir).disk) {
				t.Error("destroyed fork's disk is still there")
			}
			if s := runState(t, forks[1].StateDir); s != "Running" {
				t.Errorf("other fork is %s after a fork's destruction", s)
			}
			if s := runState(t, spec.StateDir); s != "Running" {
				t.Errorf("source is %s after the forks", s)
			}
			if after := digest(t, dir); !maps.Equal(before, after) {
				t.Errorf("capture changed by the forks:\nbefore %v\nafter  %v", before, after)
			}
			checkForkRequests(t, readRequests(t, r.logPath), inst.Pid, pids, forks, []string{spec.StateDir, dir})
		})
	}
}

// checkForkRequests checks what the fake was asked: nothing refused; the
// source paused, written in full and resumed; each fork loaded paused,
// given its own MMDS contents, then resumed, and never told a path of the
// source's or of the capture's.
func checkForkRequests(t *testing.T, reqs []fakeRequest, source int, forks []int, specs []runtime.Spec, foreign []string) {
	t.Helper()
	byPid := map[int][]fakeRequest{}
	for _, r := range reqs {
		if r.Error != "" {
			t.Errorf("%s %s %s: refused: %s", r.Method, r.Path, r.Body, r.Error)
		}
		if r.Method != http.MethodGet {
			byPid[r.Pid] = append(byPid[r.Pid], r)
		}
	}
	calls := func(rs []fakeRequest) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.Method+" "+r.Path+" "+string(r.Body))
		}
		return out
	}
	if got := strings.Join(calls(byPid[source]), "\n"); !strings.Contains(got,
		"PATCH /vm {\"state\":\"Paused\"}\nPUT /snapshot/create {\"snapshot_path\":\"capture.snap\",\"mem_file_path\":\"capture.mem\",\"snapshot_type\":\"Full\"}\nPATCH /vm {\"state\":\"Resumed\"}") {
		t.Errorf("source's requests:\n%s\nwant pause, a full snapshot in its jail, resume", got)
	}
	for i, pid := range forks {
		rs := byPid[pid]
		var got []string
		for _, r := range rs {
			got = append(got, r.Method+" "+r.Path)
			for _, p := range foreign {
				if bytes.Contains(r.Body, []byte(p)) {
					t.Errorf("fork %d: %s %s names %s: %s", i, r.Method, r.Path, p, r.Body)
				}
			}
		}
		if want := []string{"PUT /logger", "PUT /snapshot/load", "PUT /mmds", "PATCH /vm"}; !slices.Equal(got, want) {
			t.Errorf("fork %d: requests %v, want %v", i, got, want)
			continue
		}
		var load snapshotLoad
		var md struct {
			Roost struct {
				SandboxID string            `json:"sandboxID"`
				Metadata  map[string]string `json:"metadata"`
			} `json:"roost"`
		}
		json.Unmarshal(rs[1].Body, &load)
		json.Unmarshal(rs[2].Body, &md)
		if load.ResumeVM || load.SnapshotPath != "vm.snap" || load.MemBackend == nil || load.MemBackend.Path != "memory.snap" {
			t.Errorf("fork %d: load %s: want its own files in its jail, resumed only once MMDS is set", i, rs[1].Body)
		}
		// The snapshot records the captured VM's disk path: as
		// Firecracker resolves it, it is the fork's own disk.
		if own := filepath.Join(jailerRoot(specs[i].StateDir, specs[i].ID), "rootfs.ext4"); rs[1].Drive != own {
			t.Errorf("fork %d: loaded VM opened disk %s, want its own, %s", i, rs[1].Drive, own)
		}
		if md.Roost.SandboxID != specs[i].ID || md.Roost.Metadata["fork"] != fmt.Sprint(i) {
			t.Errorf("fork %d: mmds %s, want its own identity", i, rs[2].Body)
		}
		if string(rs[3].Body) != `{"state":"Resumed"}` {
			t.Errorf("fork %d: %s, want it resumed", i, rs[3].Body)
		}
	}
}

// A Firecracker taken over by its guest may put a link to a host file in
// its disk's place: a capture fails rather than copy the host file (for
// every fork to read), and the sandbox runs on.
func TestCaptureRefusesALinkInTheJail(t *testing.T) {
	r := newTestRig(t, Config{})
	d, spec := r.d, r.newSpec(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := d.Create(ctx, spec); err != nil {
		t.Fatalf("create: %v", err)
	}
	secret := filepath.Join(r.dir, "secret")
	os.WriteFile(secret, []byte("host secret"), 0o600)
	disk := paths(spec.StateDir).disk
	os.Remove(disk)
	if err := os.Symlink(secret, disk); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(r.dir, "capture")
	if err := d.Capture(ctx, spec.ID, dir); err == nil {
		t.Error("captured a jail with a link for its disk")
	}
	// A FIFO would block a reader: it is refused at once.
	os.Remove(disk)
	if err := syscall.Mkfifo(disk, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.Capture(ctx, spec.ID, dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("capture of a jail with a FIFO for its disk: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed capture left %s: %v", dir, err)
	}
	if s := runState(t, spec.StateDir); s != "Running" {
		t.Errorf("sandbox is %s after a failed capture, want Running", s)
	}
}

// A hibernated sandbox's snapshot files outside its state directory (a
// capture's) are copied into its jail, never moved: Restore removes what
// it loaded from there.
func TestIntoJailCopiesForeignFiles(t *testing.T) {
	stateDir, other := t.TempDir(), t.TempDir()
	m := &microvm.Machine{State: microvm.State{ID: "sb1", StateDir: stateDir,
		Snapshot: filepath.Join(other, "vm.snap"), Memory: filepath.Join(stateDir, "memory.snap")}}
	os.WriteFile(m.Snapshot, []byte("state"), 0o600)
	os.WriteFile(m.Memory, []byte("memory"), 0o600)
	foreign, own := m.Snapshot, m.Memory
	if err := intoJail(m); err != nil {
		t.Fatal(err)
	}
	p := paths(stateDir)
	if m.Snapshot != p.vmstate || m.Memory != p.memory {
		t.Errorf("snapshot %s, memory %s: want them in the jail", m.Snapshot, m.Memory)
	}
	if b, _ := os.ReadFile(p.vmstate); string(b) != "state" || !exists(foreign) || inode(t, foreign) == inode(t, p.vmstate) {
		t.Error("the foreign snapshot was not copied into the jail, or was moved")
	}
	if exists(own) || !exists(p.memory) {
		t.Error("the sandbox's own memory file was not moved into the jail")
	}
	if microvm.OwnFile(stateDir, foreign) || !microvm.OwnFile(stateDir, m.Snapshot) {
		t.Error("OwnFile misjudges which files Restore may remove")
	}
}

// runState is the fake's run state of the VM in stateDir.
func runState(t *testing.T, stateDir string) string {
	t.Helper()
	var info instanceInfo
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := newAPI(paths(stateDir).api).call(ctx, http.MethodGet, "/", nil, &info); err != nil {
		return err.Error()
	}
	return info.State
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t).Ino
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// digest describes each file of dir: its contents, mode, owner and
// modification time.
func digest(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, name := range dirNames(t, dir) {
		p := filepath.Join(dir, name)
		st, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(p)
		sys := st.Sys().(*syscall.Stat_t)
		out[name] = fmt.Sprintf("%x %v uid %d %s", sha256.Sum256(b), st.Mode(), sys.Uid, st.ModTime().Format(time.RFC3339Nano))
	}
	return out
}
