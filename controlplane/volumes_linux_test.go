package controlplane_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"roost.dev/roost/controlplane"
)

// volumeAndToken is E2B's VolumeAndToken.
type volumeAndToken struct {
	VolumeID string `json:"volumeID"`
	Name     string `json:"name"`
	Token    string `json:"token"`
}

// volumeEntry is E2B's VolumeEntryStat (the fields the tests read).
type volumeEntry struct {
	Name string `json:"name"`
	Type string `json:"type"`
	Path string `json:"path"`
	Size int64  `json:"size"`
	Mode uint32 `json:"mode"`
	UID  uint32 `json:"uid"`
}

func (e *testenv) createVolume(t *testing.T, body map[string]any) volumeAndToken {
	t.Helper()
	var v volumeAndToken
	e.do("POST", "/volumes", e.key, body).want(t, http.StatusCreated).decode(t, &v)
	if v.VolumeID == "" || v.Token == "" || v.Name != body["name"] {
		t.Fatalf("created volume %+v", v)
	}
	return v
}

// content calls the volume content API with token ("" sends none).
func (e *testenv) content(t *testing.T, method, op, volumeID, token string, q url.Values, body any) response {
	t.Helper()
	var hdr []string
	if token != "" {
		hdr = []string{"Authorization", "Bearer " + token}
	}
	return e.do(method, "/volumecontent/"+volumeID+"/"+op+"?"+q.Encode(), "", body, hdr...)
}

// TestVolumes runs a volume through its life on the namespace runtime:
// made, mounted in a sandbox that writes it through envd, remounted in a
// second sandbox after the first ended, read and written through the
// content API with its token, and deleted.
func TestVolumes(t *testing.T) {
	e := newTestenv(t, controlplane.Config{})
	vol := e.createVolume(t, map[string]any{"name": "data", "sizeMB": 64})
	var list []volumeAndToken
	e.do("GET", "/volumes", e.key, nil).want(t, http.StatusOK).decode(t, &list)
	if len(list) != 1 || list[0].VolumeID != vol.VolumeID || list[0].Token != "" {
		t.Fatalf("GET /volumes = %+v; want the volume without its token", list)
	}
	var got volumeAndToken
	e.do("GET", "/volumes/"+vol.VolumeID, e.key, nil).want(t, http.StatusOK).decode(t, &got)
	if got != vol {
		t.Fatalf("GET /volumes/{id} = %+v, want %+v", got, vol)
	}

	first := e.create(t, map[string]any{"volumeMounts": []map[string]any{{"name": "data", "path": "/mnt/data"}}})
	res := e.exec(t, first.SandboxID, map[string]any{"cmd": "echo kept > /mnt/data/note && mkdir -p /mnt/data/d && id -u && stat -c %u /mnt/data/note && findmnt -no OPTIONS /mnt/data"})
	if res.ExitCode != 0 {
		t.Fatalf("write to the volume: %+v", res)
	}
	t.Logf("first sandbox: %s", res.Stdout)
	if f := strings.Fields(res.Stdout); len(f) < 2 || f[0] != f[1] {
		t.Errorf("a file the sandbox's user wrote is owned by %v; want its uid", f)
	}

	t.Run("second writer is refused, naming the holder", func(t *testing.T) {
		r := e.do("POST", "/v2/sandboxes", e.key, map[string]any{"volumeMounts": []map[string]any{{"name": "data", "path": "/data"}}}).
			want(t, http.StatusConflict)
		if !strings.Contains(string(r.body), first.SandboxID) {
			t.Fatalf("409 %s does not name sandbox %s", r.body, first.SandboxID)
		}
	})
	t.Run("a read-only mount goes beside the writer", func(t *testing.T) {
		ro := e.create(t, map[string]any{"volumeMounts": []map[string]any{{"name": "data", "path": "/ro", "readOnly": true}}})
		res := e.exec(t, ro.SandboxID, map[string]any{"cmd": "cat /ro/note; echo x > /ro/other && echo wrote", "user": "root"})
		if !strings.HasPrefix(res.Stdout, "kept") || strings.Contains(res.Stdout, "wrote") {
			t.Fatalf("read-only mount: %+v", res)
		}
		e.do("DELETE", "/sandboxes/"+ro.SandboxID, e.key, nil).want(t, http.StatusNoContent)
	})
	t.Run("delete while mounted", func(t *testing.T) {
		r := e.do("DELETE", "/volumes/"+vol.VolumeID, e.key, nil).want(t, http.StatusConflict)
		if !strings.Contains(string(r.body), first.SandboxID) {
			t.Fatalf("409 %s does not name sandbox %s", r.body, first.SandboxID)
		}
	})

	e.do("DELETE", "/sandboxes/"+first.SandboxID, e.key, nil).want(t, http.StatusNoContent)
	second := e.create(t, map[string]any{"volumeMounts": []map[string]any{{"name": "data", "path": "/home/user/vol"}}})
	res = e.exec(t, second.SandboxID, map[string]any{"cmd": "cat /home/user/vol/note && ls /home/user/vol && echo more >> /home/user/vol/note"})
	if res.ExitCode != 0 || !strings.HasPrefix(res.Stdout, "kept\n") {
		t.Fatalf("second sandbox reads the volume: %+v", res)
	}

	t.Run("content API", func(t *testing.T) {
		e.testVolumeContent(t, vol, second.SandboxID)
	})
	e.do("DELETE", "/sandboxes/"+second.SandboxID, e.key, nil).want(t, http.StatusNoContent)
	e.do("DELETE", "/volumes/"+vol.VolumeID, e.key, nil).want(t, http.StatusNoContent)
	e.do("GET", "/volumes/"+vol.VolumeID, e.key, nil).want(t, http.StatusNotFound)
	e.do("DELETE", "/volumes/"+vol.VolumeID, e.key, nil).want(t, http.StatusNotFound)
	e.content(t, "GET", "dir", vol.VolumeID, vol.Token, url.Values{"path": {"/"}}, nil).want(t, http.StatusUnauthorized)
}

func (e *testenv) testVolumeContent(t *testing.T, vol volumeAndToken, sandboxID string) {
	id, tok := vol.VolumeID, vol.Token
	at := func(p string) url.Values { return url.Values{"path": {p}} }
	e.content(t, "GET", "dir", id, "", at("/"), nil).want(t, http.StatusUnauthorized)
	e.content(t, "GET", "dir", id, "vol_wrong", at("/"), nil).want(t, http.StatusUnauthorized)
	e.content(t, "GET", "dir", "vol-nosuchvolume", tok, at("/"), nil).want(t, http.StatusUnauthorized)

	var ents []volumeEntry
	e.content(t, "GET", "dir", id, tok, at("/"), nil).want(t, http.StatusOK).decode(t, &ents)
	names := map[string]string{}
	for _, en := range ents {
		names[en.Name] = en.Type
	}
	if names["note"] != "file" || names["d"] != "directory" {
		t.Fatalf("listing of / = %+v", ents)
	}
	r := e.content(t, "GET", "file", id, tok, at("/note"), nil).want(t, http.StatusOK)
	if string(r.body) != "kept\nmore\n" {
		t.Fatalf("read /note = %q", r.body)
	}
	var st volumeEntry
	e.content(t, "PUT", "file", id, tok, at("/d/hello.txt"), rawBody("hi there")).want(t, http.StatusCreated).decode(t, &st)
	if st.Name != "hello.txt" || st.Path != "/d/hello.txt" || st.Type != "file" || st.Size != 8 || st.Mode != 0o644 {
		t.Fatalf("written file's stat = %+v", st)
	}
	e.content(t, "PUT", "file", id, tok, at("/d/hello.txt"), rawBody("again")).want(t, http.StatusConflict)
	q := at("/d/hello.txt")
	q.Set("force", "true")
	q.Set("uid", "1000")
	e.content(t, "PUT", "file", id, tok, q, rawBody("again")).want(t, http.StatusCreated)
	e.content(t, "PUT", "file", id, tok, at("/missing/f"), rawBody("x")).want(t, http.StatusNotFound)
	// The sandbox sees what the API wrote, owned by its user.
	res := e.exec(t, sandboxID, map[string]any{"cmd": "cat /home/user/vol/d/hello.txt; stat -c ' %U' /home/user/vol/d/hello.txt"})
	if res.Stdout != "again user\n" {
		t.Fatalf("the sandbox reads %+v", res)
	}
	q = at("/a/b/c")
	q.Set("force", "true")
	e.content(t, "POST", "dir", id, tok, q, nil).want(t, http.StatusCreated).decode(t, &st)
	if st.Type != "directory" || st.Path != "/a/b/c" {
		t.Fatalf("made dir %+v", st)
	}
	e.content(t, "POST", "dir", id, tok, at("/x/y"), nil).want(t, http.StatusNotFound)
	e.content(t, "POST", "dir", id, tok, at("/a"), nil).want(t, http.StatusConflict)
	e.content(t, "GET", "dir", id, tok, url.Values{"path": {"/a"}, "depth": {"3"}}, nil).want(t, http.StatusOK).decode(t, &ents)
	if len(ents) != 2 || ents[1].Path != "/a/b/c" {
		t.Fatalf("listing of /a, depth 3 = %+v", ents)
	}
	e.content(t, "PATCH", "path", id, tok, at("/a/b"), map[string]any{"mode": 0o700}).want(t, http.StatusOK).decode(t, &st)
	if st.Mode != 0o700 {
		t.Fatalf("patched mode %o", st.Mode)
	}
	e.content(t, "GET", "path", id, tok, at("/nope"), nil).want(t, http.StatusNotFound)
	// Paths stay inside the volume: ".." stops at its root, and a
	// symbolic link out of it (absolute, or up past the root) is refused.
	e.content(t, "GET", "path", id, tok, at("/../../etc/passwd"), nil).want(t, http.StatusNotFound)
	if res := e.exec(t, sandboxID, map[string]any{"cmd": "ln -s /etc /home/user/vol/out && ln -s ../../.. /home/user/vol/up"}); res.ExitCode != 0 {
		t.Fatalf("make links: %+v", res)
	}
	e.content(t, "GET", "file", id, tok, at("/out/passwd"), nil).want(t, http.StatusBadRequest)
	e.content(t, "GET", "file", id, tok, at("/up/etc/passwd"), nil).want(t, http.StatusBadRequest)
	e.content(t, "GET", "path", id, tok, at("/out"), nil).want(t, http.StatusOK).decode(t, &st)
	if st.Type != "symlink" {
		t.Fatalf("stat of a link: %+v", st)
	}
	e.content(t, "DELETE", "path", id, tok, at("/a"), nil).want(t, http.StatusNoContent)
	e.content(t, "DELETE", "path", id, tok, at("/a"), nil).want(t, http.StatusNotFound)
	e.content(t, "DELETE", "path", id, tok, at("/"), nil).want(t, http.StatusBadRequest)
	e.content(t, "PUT", "dir", id, tok, at("/"), nil).want(t, http.StatusNotFound)
}

// TestVolumeBadInput: names, paths and sizes roost refuses.
func TestVolumeBadInput(t *testing.T) {
	e := newTestenv(t, controlplane.Config{})
	for _, body := range []map[string]any{
		{"name": "a/b"}, {"name": ".."}, {"name": ""}, {"name": strings.Repeat("v", 64)},
		{"name": "big", "sizeMB": 1 << 21}, {"name": "small", "sizeMB": 1},
	} {
		e.do("POST", "/volumes", e.key, body).want(t, http.StatusBadRequest)
	}
	// Larger than the host's filesystem can hold: the agent refuses it.
	r := e.do("POST", "/volumes", e.key, map[string]any{"name": "huge", "sizeMB": 1 << 20}).want(t, http.StatusBadRequest)
	if !strings.Contains(string(r.body), "larger than") {
		t.Errorf("refusal of a huge volume: %s", r.body)
	}
	e.do("GET", "/volumes/vol-nosuchvolume", e.key, nil).want(t, http.StatusNotFound)
	e.createVolume(t, map[string]any{"name": "v", "sizeMB": 16})
	e.do("POST", "/volumes", e.key, map[string]any{"name": "v"}).want(t, http.StatusConflict)
	for _, path := range []string{"data", "/", "/proc", "/proc/x", "/sys/fs", "/dev", "/a/../b", "/a//b"} {
		r := e.do("POST", "/v2/sandboxes", e.key, map[string]any{"volumeMounts": []map[string]any{{"name": "v", "path": path}}})
		r.want(t, http.StatusBadRequest)
	}
	e.do("POST", "/v2/sandboxes", e.key, map[string]any{"volumeMounts": []map[string]any{{"name": "a/b", "path": "/d"}}}).want(t, http.StatusBadRequest)
	e.do("POST", "/v2/sandboxes", e.key, map[string]any{"volumeMounts": []map[string]any{{"name": "nope", "path": "/d"}}}).want(t, http.StatusNotFound)
	// A template's symbolic link is no way out of the sandbox's root.
	r = e.do("POST", "/v2/sandboxes", e.key, map[string]any{"volumeMounts": []map[string]any{{"name": "v", "path": "/bin/vol"}}})
	r.want(t, http.StatusBadRequest)
	var n []json.RawMessage
	e.do("GET", "/v2/sandboxes", e.key, nil).want(t, http.StatusOK).decode(t, &n)
	if len(n) != 0 {
		t.Fatalf("refused creates left sandboxes: %s", n)
	}
}
