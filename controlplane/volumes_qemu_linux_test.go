package controlplane_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestVolumesQEMU: a volume in VM sandboxes on a qemu host, through the
// control plane. The guest init mounts the volume's block device; while
// the VM has it, the content API is 409 naming the sandbox (a hibernated
// VM still has it) and the sandbox cannot be forked; halted (paused
// without memory) it lets the volume go to the content API and takes it
// back when it boots again; once the sandbox is killed, what it wrote is
// in the volume, for the content API and for a second VM that mounts it
// read-only. Needs root and qemu (TCG is enough): three boots and a
// hibernation of 256 MiB guests.
func TestVolumesQEMU(t *testing.T) {
	e := newQEMUTestenv(t)
	vol := e.createVolume(t, map[string]any{"name": "data", "sizeMB": 64})
	began := time.Now()
	first := e.create(t, map[string]any{"templateID": "base", "timeout": 300, "memoryMB": 256,
		"volumeMounts": []map[string]any{{"name": "data", "path": "/mnt/data"}}}).SandboxID
	t.Logf("create with a volume: %v", time.Since(began))
	res := e.exec(t, first, map[string]any{"cmd": "echo kept > /mnt/data/note && id -u && stat -c %u /mnt/data/note && findmnt -no FSTYPE,OPTIONS /mnt/data"})
	if res.ExitCode != 0 || !strings.Contains(res.Stdout, "ext4") {
		t.Fatalf("write to the volume in the VM: %+v", res)
	}
	t.Logf("first sandbox: %s", res.Stdout)
	if f := strings.Fields(res.Stdout); len(f) < 2 || f[0] != f[1] {
		t.Errorf("a file the sandbox's user wrote is owned by %v; want its uid", f)
	}
	root := url.Values{"path": {"/"}}
	busy := func(what string) {
		t.Helper()
		r := e.content(t, "GET", "dir", vol.VolumeID, vol.Token, root, nil).want(t, http.StatusConflict)
		if !strings.Contains(string(r.body), first) {
			t.Fatalf("%s: content API 409 %s does not name sandbox %s", what, r.body, first)
		}
	}
	busy("running")
	e.do("POST", "/sandboxes/"+first+"/fork", e.key, map[string]any{"count": 1}).want(t, http.StatusConflict).wantMessage(t, vol.VolumeID)

	// Hibernated, the VM keeps the volume; restored, it has it mounted.
	e.do("POST", "/v1/sandboxes/"+first+"/snapshot", e.key, nil).want(t, http.StatusOK)
	busy("hibernated")
	e.do("POST", "/v2/sandboxes/"+first+"/connect", e.key, map[string]any{"timeout": 300}).want(t, http.StatusCreated)
	res = e.exec(t, first, map[string]any{"cmd": "cat /mnt/data/note && echo more >> /mnt/data/note"})
	if res.ExitCode != 0 || res.Stdout != "kept\n" {
		t.Fatalf("after restore: %+v", res)
	}

	// Halted (paused without memory), the guest has ended: the content
	// API reaches the volume; booted again, the VM has it back.
	e.do("POST", "/sandboxes/"+first+"/pause", e.key, map[string]any{"memory": false}).want(t, http.StatusNoContent)
	r := e.content(t, "GET", "file", vol.VolumeID, vol.Token, url.Values{"path": {"/note"}}, nil).want(t, http.StatusOK)
	if string(r.body) != "kept\nmore\n" {
		t.Fatalf("content API while the VM is halted: /note = %q", r.body)
	}
	e.content(t, "PUT", "file", vol.VolumeID, vol.Token, url.Values{"path": {"/api.txt"}}, rawBody("from the api")).want(t, http.StatusCreated)
	e.do("POST", "/v2/sandboxes/"+first+"/connect", e.key, map[string]any{"timeout": 300}).want(t, http.StatusCreated)
	busy("booted again")
	res = e.exec(t, first, map[string]any{"cmd": "cat /mnt/data/api.txt && echo last >> /mnt/data/note"})
	if res.ExitCode != 0 || res.Stdout != "from the api" {
		t.Fatalf("after boot: %+v", res)
	}

	e.do("DELETE", "/sandboxes/"+first, e.key, nil).want(t, http.StatusNoContent)
	r = e.content(t, "GET", "file", vol.VolumeID, vol.Token, url.Values{"path": {"/note"}}, nil).want(t, http.StatusOK)
	if string(r.body) != "kept\nmore\nlast\n" {
		t.Fatalf("content API after the VM ended: /note = %q", r.body)
	}

	second := e.create(t, map[string]any{"templateID": "base", "timeout": 300, "memoryMB": 256,
		"volumeMounts": []map[string]any{{"name": "data", "path": "/home/user/vol", "readOnly": true}}}).SandboxID
	res = e.exec(t, second, map[string]any{"cmd": "cat /home/user/vol/note /home/user/vol/api.txt; echo; touch /home/user/vol/x 2>&1 && echo wrote", "user": "root"})
	if !strings.HasPrefix(res.Stdout, "kept\nmore\nlast\nfrom the api\n") || strings.Contains(res.Stdout, "wrote") {
		t.Fatalf("second VM, read-only: %+v", res)
	}
	e.do("DELETE", "/sandboxes/"+second, e.key, nil).want(t, http.StatusNoContent)
	e.do("DELETE", "/volumes/"+vol.VolumeID, e.key, nil).want(t, http.StatusNoContent)
}
