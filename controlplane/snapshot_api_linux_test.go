package controlplane_test

import (
	"net/http"
	"strings"
	"testing"

	"roost.dev/roost/controlplane"
)

// snapshotInfo is E2B's SnapshotInfo.
type snapshotInfo struct {
	SnapshotID string   `json:"snapshotID"`
	Names      []string `json:"names"`
}

// TestSnapshots: POST /sandboxes/{id}/snapshots makes a template of a
// running sandbox's files and env vars, which creates take by the
// snapshot's ID while the sandbox runs on; GET /snapshots lists and
// filters them; DELETE /templates/{snapshotID} removes one.
func TestSnapshots(t *testing.T) {
	e := newTestenv(t, controlplane.Config{})
	src := e.create(t, map[string]any{"templateID": "base", "timeout": 300, "envVars": map[string]string{"SNAP_VAR": "kept"}})
	if res := e.exec(t, src.SandboxID, map[string]any{"cmd": "mkdir -p /home/user/app && echo data > /home/user/app/f && rm /home/user/.bash_logout"}); res.ExitCode != 0 {
		t.Fatalf("write files: %+v", res)
	}
	var snap snapshotInfo
	e.do("POST", "/sandboxes/"+src.SandboxID+"/snapshots", e.key, nil).want(t, http.StatusCreated).decode(t, &snap)
	if !strings.HasSuffix(snap.SnapshotID, ":default") || len(snap.Names) != 1 {
		t.Fatalf("snapshot %+v", snap)
	}
	if l := e.get(t, src.SandboxID); l.State != "running" {
		t.Fatalf("the sandbox after its snapshot: %+v", l)
	}
	// The sandbox writes on; the snapshot keeps what was.
	e.exec(t, src.SandboxID, map[string]any{"cmd": "echo later > /home/user/app/f"})

	from := e.create(t, map[string]any{"templateID": snap.SnapshotID, "timeout": 120})
	res := e.exec(t, from.SandboxID, map[string]any{"cmd": "cat /home/user/app/f; echo $SNAP_VAR; test -e /home/user/.bash_logout && echo gone-file-back"})
	if res.Stdout != "data\nkept\n" {
		t.Errorf("a sandbox from the snapshot: %+v, want the file as it was, the env var and no .bash_logout", res)
	}

	var named snapshotInfo
	e.do("POST", "/sandboxes/"+src.SandboxID+"/snapshots", e.key, map[string]any{"name": "snap-one"}).want(t, http.StatusCreated).decode(t, &named)
	if named.SnapshotID != "snap-one:default" || named.Names[0] != "snap-one:default" {
		t.Fatalf("named snapshot %+v", named)
	}
	// The name again: a new build of the same snapshot.
	e.do("POST", "/sandboxes/"+from.SandboxID+"/snapshots", e.key, map[string]any{"name": "snap-one"}).want(t, http.StatusCreated)

	list := func(query string) []string {
		var got []snapshotInfo
		e.do("GET", "/snapshots"+query, e.key, nil).want(t, http.StatusOK).decode(t, &got)
		var ids []string
		for _, s := range got {
			ids = append(ids, s.SnapshotID)
		}
		return ids
	}
	if got := list(""); len(got) != 2 {
		t.Errorf("GET /snapshots = %v, want both", got)
	}
	if got := list("?sandboxID=" + src.SandboxID); len(got) != 1 || got[0] != snap.SnapshotID {
		t.Errorf("of the first sandbox = %v, want %s (snap-one is of the second now)", got, snap.SnapshotID)
	}
	if got := list("?name=snap-one"); len(got) != 1 || got[0] != "snap-one:default" {
		t.Errorf("named snap-one = %v", got)
	}
	if got := list("?name=snap-one:v9"); len(got) != 0 {
		t.Errorf("named snap-one:v9 = %v, want none", got)
	}
	if got := list("?limit=1"); len(got) != 1 {
		t.Errorf("limit 1 = %v", got)
	}

	// A template that is no snapshot has the name web.
	e.do("POST", "/v3/templates", e.key, map[string]any{"name": "web"}).want(t, http.StatusAccepted)
	for _, bad := range []struct {
		id     string
		body   map[string]any
		status int
	}{
		{src.SandboxID, map[string]any{"name": "a/b"}, http.StatusBadRequest},
		{src.SandboxID, map[string]any{"name": ".."}, http.StatusBadRequest},
		{src.SandboxID, map[string]any{"name": "m-cache"}, http.StatusBadRequest},
		{src.SandboxID, map[string]any{"name": "web"}, http.StatusConflict},
		{"no-such-sandbox", nil, http.StatusNotFound},
	} {
		e.do("POST", "/sandboxes/"+bad.id+"/snapshots", e.key, bad.body).want(t, bad.status)
	}
	e.do("DELETE", "/sandboxes/"+from.SandboxID, e.key, nil).want(t, http.StatusNoContent)
	e.do("DELETE", "/templates/"+snap.SnapshotID, e.key, nil).want(t, http.StatusNoContent)
	e.do("DELETE", "/templates/"+snap.SnapshotID, e.key, nil).want(t, http.StatusNotFound)
	e.do("DELETE", "/templates/snap-one:nope", e.key, nil).want(t, http.StatusNotFound)
	e.do("DELETE", "/templates/snap-one:default", e.key, nil).want(t, http.StatusNoContent)
	if got := list(""); len(got) != 0 {
		t.Errorf("after deleting both: %v", got)
	}
}

// TestDiskUsage: GET /v1/sandboxes/{id} shows the disk a sandbox holds on
// its host and how it is paused; GET /teams the disk of the team's paused
// sandboxes.
func TestDiskUsage(t *testing.T) {
	e := newTestenv(t, controlplane.Config{})
	sb := e.create(t, map[string]any{"templateID": "base", "timeout": 300})
	type v1 struct {
		Paused    string `json:"paused"`
		DiskBytes *int64 `json:"diskBytes"`
	}
	get := func() v1 {
		var v v1
		e.do("GET", "/v1/sandboxes/"+sb.SandboxID, e.key, nil).want(t, http.StatusOK).decode(t, &v)
		if v.DiskBytes == nil {
			t.Fatalf("GET /v1/sandboxes/%s: no diskBytes", sb.SandboxID)
		}
		return v
	}
	before := get()
	if res := e.exec(t, sb.SandboxID, map[string]any{"cmd": "head -c 20000000 /dev/urandom > /home/user/blob && sync"}); res.ExitCode != 0 {
		t.Fatalf("write 20 MB: %+v", res)
	}
	after := get()
	if grew := *after.DiskBytes - *before.DiskBytes; grew < 19_000_000 || grew > 40_000_000 {
		t.Errorf("disk %d → %d bytes after writing 20 MB: want it to grow by about that", *before.DiskBytes, *after.DiskBytes)
	}
	e.do("POST", "/sandboxes/"+sb.SandboxID+"/pause", e.key, nil).want(t, http.StatusNoContent)
	if v := get(); v.Paused == "" {
		t.Errorf("paused sandbox: %+v, want how it is paused", v)
	}
	var teams []struct {
		Quota struct {
			PausedDiskBytes *int64 `json:"pausedDiskBytes"`
		} `json:"quota"`
	}
	e.do("GET", "/teams", e.key, nil).want(t, http.StatusOK).decode(t, &teams)
	if len(teams) != 1 || teams[0].Quota.PausedDiskBytes == nil || *teams[0].Quota.PausedDiskBytes < 20_000_000 {
		t.Errorf("GET /teams: %+v, want the paused sandbox's disk", teams)
	}
}

// TestConnectPausedByAgent: a sandbox its agent paused on timeout before
// the control plane's own timeout pass recorded it (the store still says
// running) is resumed by connect, not just given a new timeout, and a
// timeout set meanwhile answers as for a paused sandbox (404).
func TestConnectPausedByAgent(t *testing.T) {
	e := newTestenv(t, controlplane.Config{})
	id := e.create(t, map[string]any{"templateID": "base", "timeout": 300, "autoPause": true}).SandboxID
	e.exec(t, id, map[string]any{"cmd": "echo kept > /tmp/kept"})
	if _, err := e.agent.PauseToDisk(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	// A later end than the sandbox's: connect asks the agent.
	e.do("POST", "/sandboxes/"+id+"/connect", e.key, map[string]any{"timeout": 600}).want(t, http.StatusCreated)
	if res := e.exec(t, id, map[string]any{"cmd": "cat /tmp/kept"}); res.Stdout != "kept\n" {
		t.Fatalf("after connect: %+v", res)
	}
	if _, err := e.agent.PauseToDisk(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	e.do("POST", "/sandboxes/"+id+"/timeout", e.key, map[string]any{"timeout": 60}).want(t, http.StatusNotFound)
	if l := e.get(t, id); l.State != "paused" {
		t.Fatalf("after a timeout of a sandbox its agent paused: %+v", l)
	}
}
