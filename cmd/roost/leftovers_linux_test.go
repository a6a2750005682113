package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// sandboxLeftovers is what of sandbox id is still on this host: its
// network namespace (/run/netns/roost-<id>), its cgroups (roost/<id> at
// the top of each hierarchy, v2 or v1) and its state directory under
// any of agentDirs. Each is named by sandbox, so a sandbox another test
// runs beside this one is never taken for a leftover.
func sandboxLeftovers(id string, agentDirs ...string) []string {
	var left []string
	if _, err := os.Lstat(filepath.Join("/run/netns", "roost-"+id)); err == nil {
		left = append(left, "network namespace roost-"+id)
	}
	for _, pattern := range []string{"/sys/fs/cgroup/roost/" + id, "/sys/fs/cgroup/*/roost/" + id} {
		dirs, _ := filepath.Glob(pattern)
		for _, d := range dirs {
			left = append(left, "cgroup "+d)
		}
	}
	for _, dir := range agentDirs {
		d := filepath.Join(dir, "sandboxes", id)
		if _, err := os.Lstat(d); err == nil {
			left = append(left, "state directory "+d)
		}
	}
	return left
}

// waitNoLeftovers waits, up to a minute (a destroy returns before its
// teardown ends), until nothing of the sandboxes ids is left on the
// host, and returns what still is then.
func waitNoLeftovers(ids []string, agentDirs ...string) []string {
	deadline := time.Now().Add(time.Minute)
	for {
		var left []string
		for _, id := range ids {
			left = append(left, sandboxLeftovers(id, agentDirs...)...)
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// wantNoLeftovers fails t if anything of the sandboxes ids stays on the
// host (waitNoLeftovers).
func wantNoLeftovers(t *testing.T, ids []string, agentDirs ...string) {
	t.Helper()
	for _, l := range waitNoLeftovers(ids, agentDirs...) {
		t.Errorf("left on the host after the sandbox was destroyed: %s", l)
	}
}
